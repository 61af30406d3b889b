"""Billing's tables, in `public`, every row under its organization: plan limits per resource, the
usage ledger's hourly buckets, custom meters, and the rollup's record of flushed Redis batches."""

from __future__ import annotations

from django.db import models


class Resource(models.TextChoices):
    """What a plan's per-window limits apply to (docs/billing.md)."""

    API = "api", "API requests"
    TASKS = "tasks", "Tasks published over the API"
    PUBLISH = "publish", "Gateway messages published"
    USAGE_EVENTS = "usage_events", "Usage event reports"


class PlanLimit(models.Model):
    """At most `limit` requests per `window_seconds` for one resource, per organization.

    The `api` resource has no row: its limit is the plan's `requests_per_minute`.
    """

    plan = models.ForeignKey("tenants.Plan", on_delete=models.CASCADE, related_name="limits")
    resource = models.CharField(max_length=32, choices=Resource.choices)
    limit = models.PositiveIntegerField()
    window_seconds = models.PositiveIntegerField(default=60)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["plan", "resource"], name="plan_limit_unique"),
            models.CheckConstraint(
                condition=models.Q(window_seconds__gte=1), name="plan_limit_window_positive"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.plan}: {self.resource} {self.limit}/{self.window_seconds}s"


class Aggregation(models.TextChoices):
    SUM = "SUM", "Sum"
    COUNT = "COUNT", "Count"
    MAX = "MAX", "Maximum"


class Meter(models.Model):
    """An organization's own meter over the usage events its runtimes report."""

    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.CASCADE, related_name="+")
    slug = models.SlugField(max_length=40)
    name = models.CharField(max_length=80)
    event_type = models.CharField(max_length=128)
    aggregation = models.CharField(max_length=8, choices=Aggregation.choices)
    value_path = models.CharField(max_length=128, blank=True)
    group_by = models.JSONField(default=list, blank=True)
    unit = models.CharField(max_length=32, default="units")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["slug"]
        constraints = [
            models.UniqueConstraint(fields=["tenant", "slug"], name="meter_slug_unique"),
        ]

    def __str__(self) -> str:
        return self.slug


class UsageBucket(models.Model):
    """One meter's value for one group in one UTC hour of one organization (the ledger).

    The rollup adds the hours counted in Redis (sums add, maxima take the greater); while Redis
    is unreachable, fail-open requests add here directly.
    """

    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.CASCADE, related_name="+")
    meter = models.CharField(max_length=40)
    hour = models.DateTimeField()
    groups = models.JSONField(default=dict)
    value = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "meter", "hour", "groups"], name="usage_bucket_unique"
            ),
        ]
        indexes = [models.Index(fields=["tenant", "meter", "hour"], name="usage_bucket_range")]

    def __str__(self) -> str:
        return f"{self.meter} {self.hour:%Y-%m-%d %H}:00 {self.groups}: {self.value}"


class RollupBatch(models.Model):
    """A Redis hash already added to the ledger: a rollup interrupted after its commit finds it
    here and only deletes the hash, so no count is ever added twice."""

    generation = models.CharField(max_length=64, unique=True)
    rolled_up_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.generation

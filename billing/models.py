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
    # Limited by platform settings in the layers below (credentials, accounts, audit), per
    # address, account or actor: only staff's overrides change them per organization.
    AUTH = "auth", "Sign-in (each window per address and per account)"
    EXPORT = "export", "Audit log exports (per person or key)"


# The resources a plan's PlanLimit rows set (`auth` and `export` come from settings).
PLAN_RESOURCES = (Resource.API, Resource.TASKS, Resource.PUBLISH, Resource.USAGE_EVENTS)


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

    def clean(self) -> None:
        from django.core.exceptions import ValidationError

        if self.resource not in PLAN_RESOURCES:
            raise ValidationError(
                {"resource": ["Set by the platform's settings: use a limit override."]}
            )


class Aggregation(models.TextChoices):
    SUM = "SUM", "Sum"
    COUNT = "COUNT", "Count"
    MAX = "MAX", "Maximum"
    UNIQUE_COUNT = "UNIQUE_COUNT", "Distinct values"


class Meter(models.Model):
    """An organization's own meter over the usage events its runtimes report."""

    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.CASCADE, related_name="+")
    slug = models.SlugField(max_length=40)
    name = models.CharField(max_length=80)
    event_type = models.CharField(max_length=128)
    aggregation = models.CharField(max_length=16, choices=Aggregation.choices)
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


def _ledger_tenant() -> models.ForeignKey:
    """The organization of a ledger row. No database constraint: it would check every row a
    rollup writes at commit (a quarter of a 500,000-counter rollup's time). Rows are written for
    organizations looked up in the same transaction, and deleting an organization deletes them
    (Django's cascade). No index of its own: the unique constraint's index starts with it."""
    return models.ForeignKey(
        "tenants.Tenant",
        on_delete=models.CASCADE,
        related_name="+",
        db_index=False,
        db_constraint=False,
    )


class UsageBucket(models.Model):
    """One meter's value for one group in one UTC hour of one organization (the ledger).

    The rollup adds the hours counted in Redis (sums add, maxima take the greater); while Redis
    is unreachable, fail-open requests add here directly. The unique constraint's index is the
    only one besides the primary key: it serves the reports' ranges (its first three columns)
    and keeps a rollup's writes to two indexes.
    """

    tenant = _ledger_tenant()
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

    def __str__(self) -> str:
        return f"{self.meter} {self.hour:%Y-%m-%d %H}:00 {self.groups}: {self.value}"


class UsageDistinct(models.Model):
    """One distinct value a UNIQUE_COUNT meter saw for one group in one UTC hour: counts over any
    range are COUNT(DISTINCT value) over these rows (they cannot be summed from hours)."""

    tenant = _ledger_tenant()
    meter = models.CharField(max_length=40)
    hour = models.DateTimeField()
    groups = models.JSONField(default=dict)
    value = models.CharField(max_length=128)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "meter", "hour", "groups", "value"], name="usage_distinct_unique"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.meter} {self.hour:%Y-%m-%d %H}:00 {self.groups}: {self.value}"


class RollupBatch(models.Model):
    """A Redis hash already added to the ledger: a rollup interrupted after its commit finds it
    here and only deletes the hash, so no count is ever added twice."""

    generation = models.CharField(max_length=64, unique=True)
    rolled_up_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.generation


class Price(models.Model):
    """What one unit of a meter costs (staff's price table): `unit_price` per `per_units` units;
    for `llm_tokens`, per model (an empty model prices every model without its own row)."""

    meter = models.CharField(max_length=40)
    model = models.CharField(max_length=128, blank=True, help_text="llm_tokens only.")
    per_units = models.PositiveIntegerField(default=1000)
    unit_price = models.DecimalField(max_digits=12, decimal_places=6)
    currency = models.CharField(max_length=3, default="USD")

    class Meta:
        ordering = ["meter", "model"]
        constraints = [
            models.UniqueConstraint(fields=["meter", "model"], name="price_meter_model_unique"),
            models.CheckConstraint(
                condition=models.Q(unit_price__gte=0), name="price_not_negative"
            ),
        ]

    def __str__(self) -> str:
        model = f" ({self.model})" if self.model else ""
        return f"{self.meter}{model}: {self.unit_price} {self.currency} per {self.per_units}"


class PlanChange(models.Model):
    """An organization's plan from `at` on: the plan fee on an invoice is prorated across these."""

    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.CASCADE, related_name="+")
    plan = models.ForeignKey("tenants.Plan", on_delete=models.PROTECT, related_name="+")
    at = models.DateTimeField()
    changed_by = models.CharField(max_length=254)

    class Meta:
        ordering = ["at", "id"]
        indexes = [models.Index(fields=["tenant", "at"], name="plan_change_tenant_at")]

    def __str__(self) -> str:
        return f"{self.plan_id} from {self.at:%Y-%m-%d %H:%M}"


class Invoice(models.Model):
    """A closed month of one organization. Written once by close_billing_period; never changed."""

    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.CASCADE, related_name="+")
    number = models.CharField(max_length=32, unique=True)
    period_start = models.DateTimeField()
    period_end = models.DateTimeField()
    currency = models.CharField(max_length=3)
    total = models.DecimalField(max_digits=14, decimal_places=2)
    issued_at = models.DateTimeField()

    class Meta:
        ordering = ["-period_start"]
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "period_start"], name="invoice_one_per_period"
            ),
        ]

    def __str__(self) -> str:
        return self.number


class InvoiceLine(models.Model):
    invoice = models.ForeignKey(Invoice, on_delete=models.CASCADE, related_name="lines")
    position = models.PositiveSmallIntegerField()
    description = models.CharField(max_length=200)
    meter = models.CharField(max_length=40, blank=True)
    quantity = models.DecimalField(max_digits=20, decimal_places=6)
    unit = models.CharField(max_length=40)
    unit_price = models.DecimalField(max_digits=12, decimal_places=6)
    amount = models.DecimalField(max_digits=14, decimal_places=2)

    class Meta:
        ordering = ["position"]

    def __str__(self) -> str:
        return self.description


class LimitOverride(models.Model):
    """Staff's temporary limit for one organization, until `expires_at`: of a rate-limited
    `resource` (`limit` per `window_seconds`), or of the monthly quota on a `meter` (`limit` a
    month; the plan's quota keeps its kind, hard when the plan has none). One of the two."""

    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.CASCADE, related_name="+")
    resource = models.CharField(max_length=32, choices=Resource.choices, blank=True)
    meter = models.CharField(
        max_length=40, blank=True, help_text="A meter's monthly quota (leave resource empty)."
    )
    limit = models.PositiveBigIntegerField()
    window_seconds = models.PositiveIntegerField(default=60, help_text="Resources only.")
    expires_at = models.DateTimeField()
    reason = models.CharField(max_length=500)
    created_by = models.CharField(max_length=254, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["tenant", "expires_at"], name="limit_override_active")]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(window_seconds__gte=1), name="limit_override_window_positive"
            ),
            models.CheckConstraint(
                condition=(models.Q(resource="") & ~models.Q(meter=""))
                | (~models.Q(resource="") & models.Q(meter="")),
                name="limit_override_one_target",
            ),
        ]

    def __str__(self) -> str:
        until = f"{self.expires_at:%Y-%m-%d %H:%M}"
        if self.meter:
            return f"{self.meter} {self.limit:,} a month until {until}"
        return f"{self.resource} {self.limit}/{self.window_seconds}s until {until}"


class PlanQuota(models.Model):
    """A plan's monthly quota on one meter: hard (refused past it: 429 `quota_exceeded`) or soft
    (counted past it). Both alert at 80% and 100%, once per threshold and month. Gateway messages
    keep their quota on the plan (`messages_per_month`)."""

    plan = models.ForeignKey("tenants.Plan", on_delete=models.CASCADE, related_name="quotas")
    meter = models.CharField(max_length=40)
    limit = models.PositiveBigIntegerField()
    is_hard = models.BooleanField(default=True)

    class Meta:
        ordering = ["plan", "meter"]
        constraints = [
            models.UniqueConstraint(fields=["plan", "meter"], name="plan_quota_unique"),
        ]

    def __str__(self) -> str:
        kind = "hard" if self.is_hard else "soft"
        return f"{self.plan}: {self.meter} {self.limit:,} a month ({kind})"


class BudgetSubject(models.TextChoices):
    API_KEY = "api_key", "API key"
    AGENT = "agent", "Agent"


class Budget(models.Model):
    """A monthly spend budget of one API key or agent: what its metered usage costs (the price
    table's prices) may reach `amount` in `currency` each month; past it, 429 `budget_exceeded`.

    `subject_id` is the key's id or the agent's id, as the ledger's `api_key`/`agent` groups
    hold them."""

    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.CASCADE, related_name="+")
    subject_type = models.CharField(max_length=16, choices=BudgetSubject.choices)
    subject_id = models.CharField(max_length=64)
    amount = models.DecimalField(max_digits=12, decimal_places=2)
    currency = models.CharField(max_length=3, default="USD")
    created_by = models.CharField(max_length=254, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["subject_type", "subject_id"]
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "subject_type", "subject_id"], name="budget_one_per_subject"
            ),
            models.CheckConstraint(condition=models.Q(amount__gte=0), name="budget_not_negative"),
        ]

    def __str__(self) -> str:
        return f"{self.subject_type} {self.subject_id}: {self.amount} {self.currency} a month"

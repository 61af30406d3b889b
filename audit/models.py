"""Audit events, retention checkpoints and compliance alert rules: one set per schema."""

from __future__ import annotations

from django.db import models
from django.utils import timezone


class Result(models.TextChoices):
    SUCCESS = "success", "Success"
    DENIED = "denied", "Denied"
    FAILED = "failed", "Failed"


class AuditEvent(models.Model):
    """One thing that happened. Rows are never changed or deleted (see the table's triggers),
    except once: `record` inserts an event unsealed (no sequence, no hashes) and the sealer
    (audit.sealing) chains it after commit, setting only `sequence`, the hashes and `sealed_at`.

    Each schema has its own table: an organization's log in its schema, the platform's in
    `public`. The indexes end in `-sequence` so that a filter plus "newest first" plus a keyset
    cursor (`sequence < cursor`) is one index range scan.
    """

    # The organization's public id ("platform" for the public log): exports stand on their own.
    tenant_id = models.CharField(max_length=64)
    # The position in the chain, given when sealed (None until then).
    sequence = models.PositiveBigIntegerField(unique=True, null=True, blank=True)
    occurred_at = models.DateTimeField()
    actor_kind = models.CharField(max_length=16)
    actor_id = models.CharField(max_length=64, blank=True)
    actor_label = models.CharField(max_length=254, blank=True)
    action = models.CharField(max_length=64)
    resource_type = models.CharField(max_length=64, blank=True)
    resource_id = models.CharField(max_length=128, blank=True)
    result = models.CharField(max_length=16, choices=Result.choices, default=Result.SUCCESS)
    ip = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.CharField(max_length=256, blank=True)
    details = models.JSONField(default=dict, blank=True)
    previous_hash = models.CharField(max_length=64, blank=True, default="")
    hash = models.CharField(max_length=64, blank=True, default="")
    # When the sealer chained it (not hashed): sealed_at - occurred_at bounds the sealing lag.
    sealed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-sequence"]
        indexes = [
            models.Index(fields=["occurred_at"], name="audit_occurred_idx"),
            models.Index(fields=["action", "-sequence"], name="audit_action_idx"),
            models.Index(fields=["actor_id", "-sequence"], name="audit_actor_idx"),
            models.Index(fields=["actor_label", "-sequence"], name="audit_actor_label_idx"),
            models.Index(
                fields=["resource_type", "resource_id", "-sequence"], name="audit_res_idx"
            ),
            models.Index(fields=["result", "-sequence"], name="audit_result_idx"),
            models.Index(
                fields=["id"], condition=models.Q(sequence__isnull=True), name="audit_unsealed_idx"
            ),
        ]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(result__in=Result.values), name="audit_result_valid"
            )
        ]

    def __str__(self) -> str:
        position = f"#{self.sequence}" if self.sequence is not None else "(unsealed)"
        return f"{position} {self.action} by {self.actor_label or self.actor_kind}"


class AuditCheckpoint(models.Model):
    """The last event a retention run removed: the chain now starts right after it.

    Append-only like the events (same triggers). The retention event recorded in the chain
    repeats `sequence` and `hash`, so a forged checkpoint does not verify.
    """

    sequence = models.PositiveBigIntegerField(unique=True)
    hash = models.CharField(max_length=64)
    removed_count = models.PositiveBigIntegerField()
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-sequence"]

    def __str__(self) -> str:
        return f"checkpoint after #{self.sequence}"


class Severity(models.TextChoices):
    LOW = "low", "Low"
    MEDIUM = "medium", "Medium"
    HIGH = "high", "High"


class AlertRule(models.Model):
    """A compliance rule the organization switches on or off; its logic is `audit.rules`[code]."""

    code = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=120)
    description = models.TextField(blank=True)
    severity = models.CharField(max_length=8, choices=Severity.choices, default=Severity.MEDIUM)
    is_active = models.BooleanField(default=True)
    parameters = models.JSONField(default=dict, blank=True)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(severity__in=Severity.values), name="audit_rule_severity_valid"
            )
        ]

    def __str__(self) -> str:
        return self.name


class Alert(models.Model):
    """A rule matched: which rule, on which event (by sequence: retention may remove events)."""

    rule = models.ForeignKey(AlertRule, on_delete=models.PROTECT, related_name="alerts")
    event_sequence = models.PositiveBigIntegerField()
    subject = models.CharField(max_length=254, blank=True)
    summary = models.CharField(max_length=255)
    details = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    acknowledged_by = models.CharField(max_length=254, blank=True)

    class Meta:
        ordering = ["-id"]
        indexes = [
            models.Index(fields=["rule", "subject", "-created_at"], name="audit_alert_rule_idx")
        ]

    def __str__(self) -> str:
        return self.summary


class FailureWindow(models.Model):
    """Failures from one source (client address + what failed) within one time window, kept
    outside the hash chain while they accumulate (audit.failures). Each failure is one UPSERT
    here; the chain gets at most three rows per source and window: the first failure, the one
    that reaches the alert threshold, and a summary with the count when the window has closed."""

    source = models.CharField(max_length=64)  # sha256 of the grouping fields
    window_start = models.DateTimeField()
    action = models.CharField(max_length=64)
    resource_type = models.CharField(max_length=64, blank=True)
    resource_id = models.CharField(max_length=128, blank=True)
    ip = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.CharField(max_length=256, blank=True)
    details = models.JSONField(default=dict, blank=True)
    count = models.PositiveIntegerField(default=0)
    recorded = models.PositiveIntegerField(default=0)  # failures already in audit rows
    first_at = models.DateTimeField()
    last_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["source", "window_start"], name="audit_failure_window")
        ]
        indexes = [models.Index(fields=["window_start"], name="audit_failure_start_idx")]

    def __str__(self) -> str:
        return f"{self.action} x{self.count} from {self.ip or '?'}"

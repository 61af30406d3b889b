"""Audit events: one table per schema (each organization's log, and the platform's in `public`)."""

from __future__ import annotations

from django.db import models


class Result(models.TextChoices):
    SUCCESS = "success", "Success"
    DENIED = "denied", "Denied"
    FAILED = "failed", "Failed"


class AuditEvent(models.Model):
    """One thing that happened. Rows are never updated or deleted (see the table's triggers)."""

    # The organization's public id ("platform" for the public log): exports stand on their own.
    tenant_id = models.CharField(max_length=64)
    sequence = models.PositiveBigIntegerField(unique=True)
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
    previous_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64)

    class Meta:
        ordering = ["-sequence"]
        indexes = [
            models.Index(fields=["occurred_at"], name="audit_occurred_idx"),
            models.Index(fields=["action", "-sequence"], name="audit_action_idx"),
            models.Index(fields=["actor_id", "-sequence"], name="audit_actor_idx"),
            models.Index(
                fields=["resource_type", "resource_id", "-sequence"], name="audit_res_idx"
            ),
            models.Index(fields=["result", "-sequence"], name="audit_result_idx"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(result__in=Result.values), name="audit_result_valid"
            )
        ]

    def __str__(self) -> str:
        return f"#{self.sequence} {self.action} by {self.actor_label or self.actor_kind}"

"""Retention: remove a log's oldest events while keeping what remains verifiable."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.utils import timezone

from audit import sealing
from audit.chain import RETENTION_ACTION
from audit.models import AuditCheckpoint, AuditEvent
from audit.services import deny, lock_chain, record
from core.actors import Actor


@dataclass(frozen=True)
class RetentionResult:
    removed: int
    through_sequence: int | None
    cutoff: Any


def audit_retention_apply(*, actor: Actor, retention_days: int, now: Any = None) -> RetentionResult:
    """Remove the current log's events older than `retention_days`, keeping it verifiable.

    The removed events are always a prefix of the chain (everything up to the newest event older
    than the cutoff). The table's trigger allows the DELETE only for sequences up to the
    transaction-local `audit.retention_through`; the last removed event's sequence and hash are
    kept as a checkpoint, and the run is recorded as an event that repeats them.
    """
    if actor.kind not in {"system", "staff"}:
        deny(
            actor=actor,
            action=RETENTION_ACTION,
            resource_type="audit_log",
            reason="Only the platform applies retention.",
        )
    if retention_days < 1:
        raise ValidationError({"retention_days": ["At least one day."]})
    now = now or timezone.now()
    cutoff = now - timedelta(days=retention_days)
    with transaction.atomic():
        # Chain what is pending first (this also takes the chain's lock until commit).
        sealing.seal()
        lock_chain()
        last = (
            AuditEvent.objects.filter(occurred_at__lt=cutoff, sequence__isnull=False)
            .order_by("-sequence")
            .values_list("sequence", "hash")
            .first()
        )
        removed = 0
        if last is not None:
            through, last_hash = last
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT set_config('audit.retention_through', %s, true)", [str(through)]
                )
                cursor.execute("DELETE FROM audit_auditevent WHERE sequence <= %s", [through])
                removed = cursor.rowcount
                cursor.execute("SELECT set_config('audit.retention_through', '', true)")
            AuditCheckpoint.objects.create(
                sequence=through, hash=last_hash, removed_count=removed, created_at=now
            )
        record(
            actor=actor,
            action=RETENTION_ACTION,
            resource_type="audit_log",
            details={
                "retention_days": retention_days,
                "cutoff": cutoff.isoformat(),
                "removed": removed,
                "through_sequence": last[0] if last else None,
                "last_removed_hash": last[1] if last else None,
            },
        )
    through_sequence = last[0] if last else None
    return RetentionResult(removed=removed, through_sequence=through_sequence, cutoff=cutoff)

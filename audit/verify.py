"""Walk the current schema's hash chain and report whether it is intact, or where it breaks."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from django.db import connection, transaction

from audit import sealing
from audit.chain import GENESIS_HASH, RETENTION_ACTION, compute_hash
from audit.models import AuditCheckpoint, AuditEvent
from audit.selectors import require_audit_read
from audit.services import current_tenant_id, record
from core.actors import Actor

CHUNK_SIZE = 2000


@dataclass(frozen=True)
class VerifyReport:
    """The outcome: intact, or the first broken event (`broken_sequence`) and why."""

    is_intact: bool
    checked: int
    first_sequence: int | None
    last_sequence: int | None
    head_hash: str
    checkpoint_sequence: int | None
    broken_sequence: int | None = None
    reason: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def verify_chain(*, tenant_id: str, chunk_size: int = CHUNK_SIZE) -> VerifyReport:
    """Check every event of the current schema's log, oldest first, in constant memory.

    Each event must: carry the next sequence number (none missing, none inserted), hash to its
    stored `hash` (contents unchanged), link to its predecessor's hash (order unchanged), and
    belong to `tenant_id` (not copied from another log). The chain starts at genesis, or after the
    latest retention checkpoint, which a retention event in the chain must confirm.

    Events still unsealed are sealed first (audit.sealing); one the sealer refuses (inserted,
    bypassing `record`, into the sealed past) breaks the log too.

    Runs in one REPEATABLE READ snapshot when it can (outside any transaction), so that a
    retention run or new events landing mid-walk do not produce a false alarm.
    """
    sealing.seal()
    if connection.in_atomic_block:
        return _checked(_walk(tenant_id, chunk_size))
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        return _checked(_walk(tenant_id, chunk_size))


def _checked(report: VerifyReport) -> VerifyReport:
    if not report.is_intact:
        return report
    stale = sealing.stale_unsealed()
    if stale is None:
        return report
    return replace(
        report,
        is_intact=False,
        broken_sequence=None,
        reason=(
            f"an unsealed event (id {stale.pk}, {stale.action}, {stale.occurred_at.isoformat()}) "
            "is older than the chain's head by more than the sealing delay allows: it was "
            "inserted bypassing the log"
        ),
    )


def _walk(tenant_id: str, chunk_size: int) -> VerifyReport:
    checkpoint = AuditCheckpoint.objects.order_by("-sequence").first()
    expected_sequence, expected_previous = 1, GENESIS_HASH
    checkpoint_sequence = None
    if checkpoint is not None:
        checkpoint_sequence = checkpoint.sequence
        expected_sequence, expected_previous = checkpoint.sequence + 1, checkpoint.hash
    checked = 0
    first_sequence: int | None = None
    last_hash = expected_previous
    last_sequence: int | None = None

    def broken(sequence: int | None, reason: str) -> VerifyReport:
        return VerifyReport(
            is_intact=False,
            checked=checked,
            first_sequence=first_sequence,
            last_sequence=last_sequence,
            head_hash=last_hash,
            checkpoint_sequence=checkpoint_sequence,
            broken_sequence=sequence,
            reason=reason,
        )

    if checkpoint is not None and not _checkpoint_confirmed(checkpoint):
        return broken(
            checkpoint.sequence + 1,
            f"the retention checkpoint after #{checkpoint.sequence} is not confirmed by a "
            "retention event in the chain",
        )

    after = 0
    while True:
        batch = list(
            AuditEvent.objects.filter(sequence__gt=after).order_by("sequence")[:chunk_size]
        )
        if not batch:
            break
        for event in batch:
            if first_sequence is None:
                first_sequence = event.sequence
            if event.sequence != expected_sequence:
                if event.sequence < expected_sequence:
                    reason = (
                        f"event #{event.sequence} precedes the chain's start (#{expected_sequence})"
                    )
                elif event.sequence == expected_sequence + 1:
                    reason = f"event #{expected_sequence} is missing"
                else:
                    reason = f"events #{expected_sequence} to #{event.sequence - 1} are missing"
                return broken(event.sequence, reason)
            if compute_hash(event) != event.hash:
                return broken(event.sequence, "its contents changed: the hash does not match")
            if event.previous_hash != expected_previous:
                return broken(
                    event.sequence,
                    f"it does not link to event #{expected_sequence - 1}: the chain was "
                    "reordered or rewritten here",
                )
            if event.tenant_id != tenant_id:
                return broken(
                    event.sequence, f"it belongs to another log (tenant {event.tenant_id})"
                )
            checked += 1
            last_sequence = event.sequence
            last_hash = event.hash
            expected_sequence = event.sequence + 1
            expected_previous = event.hash
        after = batch[-1].sequence
    return VerifyReport(
        is_intact=True,
        checked=checked,
        first_sequence=first_sequence,
        last_sequence=last_sequence,
        head_hash=last_hash,
        checkpoint_sequence=checkpoint_sequence,
    )


def _checkpoint_confirmed(checkpoint: AuditCheckpoint) -> bool:
    return AuditEvent.objects.filter(
        action=RETENTION_ACTION,
        sequence__gt=checkpoint.sequence,
        details__through_sequence=checkpoint.sequence,
        details__last_removed_hash=checkpoint.hash,
    ).exists()


def audit_log_verify(*, actor: Actor) -> VerifyReport:
    """Verify the current log's chain and record that it was verified (with the outcome)."""
    require_audit_read(actor, "audit.verified")
    report = verify_chain(tenant_id=current_tenant_id())
    record(
        actor=actor,
        action="audit.verified",
        resource_type="audit_log",
        details={
            "intact": report.is_intact,
            "checked": report.checked,
            "broken_sequence": report.broken_sequence,
            "reason": report.reason,
            "head_hash": report.head_hash,
        },
    )
    return report

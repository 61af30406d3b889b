"""Sealing: events are inserted unchained (no sequence, no hash) in the writer's transaction, and
chained after commit, in commit order, by one sealer at a time per schema, in batches.

So writers of one organization never queue on each other until commit: the chain's advisory lock
is held only by the short sealing transaction. Anything that reads the chain as a whole
(verification, exports, retention, the event list) seals first.

Who seals (settings.AUDIT_SEALER):
- "thread" (default): each process that records events runs one daemon thread, woken after each
  commit that recorded an event (the demo, gunicorn and uvicorn workers, management commands).
- "inline": the committing thread seals right after its commit (no thread; the caller waits).
- "immediate": no deferral: `record` chains the event in the writer's transaction, which holds the
  chain's lock until it ends (the behaviour before; one writer per organization at a time).
- "off": nothing in-process; `manage.py seal_audit --every N` seals every schema with unsealed
  events (also the backstop after a crash between a commit and its sealing).

Rows the sealer refuses: an unsealed event that is older than the chain's head by more than
settings.AUDIT_SEAL_MAX_DELAY_SECONDS cannot come from a transaction that committed after the
head was sealed within that time: it was inserted bypassing `record` (backdated into the past).
It stays unsealed and verification reports it (see `stale_unsealed`).
"""

from __future__ import annotations

import atexit
import logging
import threading
from datetime import timedelta
from typing import TYPE_CHECKING

from django.conf import settings
from django.db import close_old_connections, connection, transaction
from django.utils import timezone

from audit import chain
from audit.models import AuditCheckpoint, AuditEvent
from core import metrics
from tenants import context

if TYPE_CHECKING:
    from tenants.models import Tenant

logger = logging.getLogger(__name__)

# Both halves of the chain's advisory lock key: a class of lock, then the schema.
CHAIN_LOCK_CLASS = 0x41554454  # "AUDT"
BATCH_SIZE = 500


def lock_chain() -> None:
    """Serialise sealing (and retention) of this schema's chain until the transaction ends."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_advisory_xact_lock(%s, hashtext(current_schema()))", [CHAIN_LOCK_CLASS]
        )


def max_delay() -> timedelta:
    return timedelta(seconds=float(getattr(settings, "AUDIT_SEAL_MAX_DELAY_SECONDS", 3600)))


def _head() -> tuple[int, str, object]:
    last = (
        AuditEvent.objects.filter(sequence__isnull=False)
        .order_by("-sequence")
        .values_list("sequence", "hash", "occurred_at")
        .first()
    )
    if last is not None:
        return last
    # An emptied log (retention) continues from its checkpoint, not from genesis.
    checkpoint = (
        AuditCheckpoint.objects.order_by("-sequence").values_list("sequence", "hash").first()
    )
    if checkpoint is not None:
        return checkpoint[0], checkpoint[1], None
    return 0, chain.GENESIS_HASH, None


def has_unsealed() -> bool:
    return AuditEvent.objects.filter(sequence__isnull=True).exists()


def mode() -> str:
    return getattr(settings, "AUDIT_SEALER", "thread")


def seal(*, batch_size: int = BATCH_SIZE) -> int:
    """Chain every unsealed event this transaction can see, oldest insert first; returns how many.

    Runs in its own transaction (or the caller's, which then holds the chain's lock until it
    ends). Alerts of the sealed events are raised here, then published after commit.
    """
    if not has_unsealed():
        return 0
    with transaction.atomic():
        lock_chain()
        return len(_seal_pass(batch_size))


def seal_now(event: AuditEvent) -> None:
    """AUDIT_SEALER=immediate: chain `event` (and anything pending) in the writer's transaction,
    which then holds the chain's lock until it ends (the behaviour before deferred sealing)."""
    lock_chain()
    for sealed in _seal_pass(BATCH_SIZE):
        if sealed.pk == event.pk:
            event.sequence, event.previous_hash = sealed.sequence, sealed.previous_hash
            event.hash, event.sealed_at = sealed.hash, sealed.sealed_at


def _seal_pass(batch_size: int) -> list[AuditEvent]:
    """Seal under the chain's lock (held by the caller's transaction); timed, and the lag of
    the oldest event it sealed (commit to sealed, about) kept as the sealer's job lag."""
    with metrics.AUDIT_WRITE.labels("seal").time():
        sealed = _chain_pending(batch_size)
    if sealed:
        oldest = min(event.occurred_at for event in sealed)
        lag = (sealed[-1].sealed_at - oldest).total_seconds()
        metrics.JOB_LAG.labels("audit_sealer").set(max(lag, 0.0))
    return sealed


def _chain_pending(batch_size: int) -> list[AuditEvent]:
    from audit import rules, services

    sequence, previous, head_at = _head()
    sealed: list[AuditEvent] = []
    after = 0
    while True:
        batch = list(
            AuditEvent.objects.filter(sequence__isnull=True, id__gt=after).order_by("id")[
                :batch_size
            ]
        )
        if not batch:
            break
        after = batch[-1].pk
        now = timezone.now()  # per batch: a long pass must not date later events too early
        chained = []
        for event in batch:
            if head_at is not None and event.occurred_at < head_at - max_delay():
                # Backdated into the sealed past: not from `record` (see the module).
                logger.warning("audit event id %s is too old to seal; left unsealed", event.pk)
                continue
            sequence += 1
            event.sequence = sequence
            event.previous_hash = previous
            event.hash = chain.compute_hash(event)
            event.sealed_at = now
            previous = event.hash
            if head_at is None or event.occurred_at > head_at:
                head_at = event.occurred_at
            chained.append(event)
        AuditEvent.objects.bulk_update(
            chained, ["sequence", "previous_hash", "hash", "sealed_at"], batch_size=batch_size
        )
        for event in chained:
            for alert in rules.evaluate(event):
                services.publish_alert(alert)
        sealed.extend(chained)
        if len(batch) < batch_size:
            break
    return sealed


def stale_unsealed() -> AuditEvent | None:
    """An unsealed event older than the head by more than the allowed delay (after sealing)."""
    head = (
        AuditEvent.objects.filter(sequence__isnull=False)
        .order_by("-sequence")
        .values_list("occurred_at", flat=True)
        .first()
    )
    if head is None:
        return None
    return (
        AuditEvent.objects.filter(sequence__isnull=True, occurred_at__lt=head - max_delay())
        .order_by("id")
        .first()
    )


# --- Waking the sealer after commit --------------------------------------------------------------


class _Sealer:
    """One daemon thread per process: seals the schemas it is woken for, one pass per wake-up
    (a wake-up during a pass queues another pass, so a commit is never missed)."""

    def __init__(self) -> None:
        self._pending: dict[str, Tenant | None] = {}
        self._condition = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopping = False
        atexit.register(self.drain)

    def drain(self) -> None:
        """At exit: let the thread finish its pass and what is pending (a daemon thread is
        killed when the interpreter ends, possibly between a commit and its sealing)."""
        self.stop()
        with self._condition:
            pending, self._pending = self._pending, {}
        for tenant in pending.values():
            _seal_in_background(tenant)

    def wake(self, tenant: Tenant | None) -> None:
        key = tenant.schema_name if tenant is not None else "public"
        with self._condition:
            self._pending[key] = tenant
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="audit-sealer", daemon=True)
                self._thread.start()
            self._condition.notify()

    def stop(self) -> None:
        """Finish what is pending, close the thread's connection and end it (tests)."""
        with self._condition:
            thread, self._stopping = self._thread, True
            self._condition.notify()
        if thread is not None:
            thread.join(timeout=30)
        with self._condition:
            self._thread, self._stopping = None, False

    def _run(self) -> None:
        try:
            while True:
                with self._condition:
                    while not self._pending and not self._stopping:
                        if not self._condition.wait(timeout=30):
                            connection.close()  # idle: give the connection back
                    if not self._pending and self._stopping:
                        return
                    pending, self._pending = self._pending, {}
                for tenant in pending.values():
                    _seal_in_background(tenant)
        finally:
            connection.close()


_sealer = _Sealer()


def seal_in(tenant: Tenant | None) -> int:
    """Seal one schema's log (None: the platform's)."""
    enter = context.public_context() if tenant is None else context.tenant_context(tenant)
    with enter:
        return seal()


def _seal_in_background(tenant: Tenant | None) -> None:
    close_old_connections()
    try:
        seal_in(tenant)
    except Exception:  # a backstop (seal_audit, the next commit, any reader) seals them later
        logger.exception("sealing the audit log of %s failed", tenant or "the platform")
        connection.close()


def after_commit(tenant: Tenant | None) -> None:
    """Called once the transaction that recorded an event committed."""
    if mode() == "thread":
        _sealer.wake(tenant)
    elif mode() == "inline":
        enter = context.public_context() if tenant is None else context.tenant_context(tenant)
        with enter:
            try:
                seal()
            except Exception:
                logger.exception("sealing the audit log after commit failed")

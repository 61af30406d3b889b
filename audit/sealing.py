"""Sealing: events are inserted unchained (no sequence, no hash) in the writer's transaction, and
chained after commit, in commit order, by one sealer at a time per schema, in batches.

So writers of one organization never queue on each other until commit: the chain's advisory lock
is held only by the short sealing transaction. Anything that reads the chain as a whole
(verification, exports, retention, the event list) seals first.

Who seals (settings.AUDIT_SEALER):
- "thread" (the settings' default): each process that records events runs one daemon thread,
  woken after each commit that recorded an event (the demo, gunicorn and uvicorn workers,
  management commands); per schema one process at a time leads and seals every process's
  events every AUDIT_SEAL_INTERVAL_SECONDS, each pass two round trips (`_Sealer`, `seal_pass`).
- "inline": the committing thread seals right after its commit (no thread; the caller waits).
- "immediate": no deferral: `record` chains the event in the writer's
  transaction, which holds the chain's lock until it ends (one writer per organization at a time).
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
import time
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
# The leader lock's class: the process holding it (session-level) seals the schema (_Sealer).
LEADER_LOCK_CLASS = 0x41554453  # "AUDS"
# A leader lets go after this many passes in a row with nothing to seal.
IDLE_PASSES = 3
# A process that found another leader tries the lead again after this many intervals at the
# soonest (the leader seals its commits meanwhile; see _Sealer).
FOLLOWER_INTERVALS = 5


def lock_chain() -> None:
    """Serialise sealing (and retention) of this schema's chain until the transaction ends."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_advisory_xact_lock(%s, hashtext(current_schema()))", [CHAIN_LOCK_CLASS]
        )


def interval() -> float:
    """The thread sealer's pause between passes over a schema (wake-ups within it coalesce)."""
    return float(getattr(settings, "AUDIT_SEAL_INTERVAL_SECONDS", 0.05))


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
        chained, sequence, previous, head_at = _chain(batch, sequence, previous, head_at)
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


def _chain(
    batch: list[AuditEvent], sequence: int, previous: str, head_at: object
) -> tuple[list[AuditEvent], int, str, object]:
    """Chain `batch` (unsealed, in id order) after the head (`sequence`, `previous`, dated
    `head_at`); returns the chained events and the new head. A backdated row stays unsealed."""
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
    return chained, sequence, previous, head_at


# --- The sealer's pass in two round trips ---------------------------------------------------------

# Every field an event's hash covers, read by the sealer (the ORM's converters applied, so the
# values, hence the hashes, are exactly those verification recomputes from model instances).
_READ_FIELDS = (
    "id",
    "tenant_id",
    "occurred_at",
    "actor_kind",
    "actor_id",
    "actor_label",
    "action",
    "resource_type",
    "resource_id",
    "result",
    "ip",
    "user_agent",
    "details",
)
_HEAD_SQL = (
    "(SELECT 0, sequence, hash, occurred_at FROM audit_auditevent WHERE sequence IS NOT NULL"
    " ORDER BY sequence DESC LIMIT 1) UNION ALL (SELECT 1, sequence, hash, NULL FROM"
    " audit_auditcheckpoint ORDER BY sequence DESC LIMIT 1)"
)
# The whole batch in one statement; it fails (and the transaction with it, before its COMMIT)
# unless every row was still unsealed, which the chain's lock guarantees.
_UPDATE_SQL = (
    "WITH sealed AS (UPDATE audit_auditevent AS e SET sequence = v.sequence,"
    " previous_hash = v.previous_hash, hash = v.hash, sealed_at = %s"
    " FROM unnest(%s::bigint[], %s::bigint[], %s::varchar[], %s::varchar[])"
    " AS v(id, sequence, previous_hash, hash) WHERE e.id = v.id AND e.sequence IS NULL"
    " RETURNING 1) SELECT 1 / (count(*) = %s)::int FROM sealed"
)


_compiled = threading.local()


def _batch_query(batch_size: int):
    """The unsealed batch as SQL, and the compiler that converts its rows like the ORM does.

    Compiled once per thread, connection and batch size: the SQL names no schema (the search
    path picks it), and compiling the ORM query was most of a small pass's Python time."""
    key = (id(connection), batch_size)
    cached = getattr(_compiled, "entry", None)
    if cached is not None and cached[0] == key:
        return cached[1]
    query = (
        AuditEvent.objects.filter(sequence__isnull=True)
        .order_by("id")
        .values_list(*_READ_FIELDS)[:batch_size]
        .query
    )
    compiler = query.get_compiler(connection=connection)
    sql, params = compiler.as_sql()
    _compiled.entry = (key, (compiler, sql, params))
    return compiler, sql, params


class _Fallback(Exception):
    """The batch holds an event an alert rule watches: seal it through the ORM (rules.evaluate
    runs queries and saves alerts in the sealing transaction)."""


def _pipelined_pass(batch_size: int) -> int:
    """One sealing pass outside any transaction, in two round trips instead of seven: BEGIN, the
    chain's lock, the head and the batch sent together; the hashes computed here; the UPDATE of
    the whole batch and COMMIT sent together. Same lock, same order, same hashes as `seal`.
    Raises _Fallback (having sealed nothing) when the batch holds an action a rule watches."""
    from audit import rules

    compiler, batch_sql, batch_params = _batch_query(batch_size)
    raw = connection.connection
    begin, lock, head, batch = cursors = [connection.cursor() for _ in range(4)]
    watched = False
    chained: list[AuditEvent] = []
    try:
        with raw.pipeline():
            begin.execute("BEGIN")
            lock.execute(
                "SELECT pg_advisory_xact_lock(%s, hashtext(current_schema()))", [CHAIN_LOCK_CLASS]
            )
            head.execute(_HEAD_SQL)
            batch.execute(batch_sql, batch_params)
            heads = sorted(head.fetchall())
            rows = list(compiler.results_iter(results=[batch.fetchall()]))
            watched = any(row[6] in rules.WATCHED_ACTIONS for row in rows)
            if rows and not watched:
                sequence, previous, head_at = (
                    heads[0][1:] if heads else (0, chain.GENESIS_HASH, None)
                )
                events = [AuditEvent(**dict(zip(_READ_FIELDS, row, strict=True))) for row in rows]
                chained = _chain(events, sequence, previous, head_at)[0]
            if chained:
                lock.execute(
                    _UPDATE_SQL,
                    [
                        chained[0].sealed_at,
                        [event.pk for event in chained],
                        [event.sequence for event in chained],
                        [event.previous_hash for event in chained],
                        [event.hash for event in chained],
                        len(chained),
                    ],
                )
            begin.execute("ROLLBACK" if watched else "COMMIT")
    except BaseException:
        if raw.info.transaction_status != 0:  # not idle: whatever failed, end the transaction
            try:
                raw.execute("ROLLBACK")
            except Exception:
                connection.close()
        raise
    finally:
        for cursor in cursors:
            cursor.close()
    if watched:
        raise _Fallback
    if chained:
        oldest = min(event.occurred_at for event in chained)
        lag = (chained[-1].sealed_at - oldest).total_seconds()
        metrics.JOB_LAG.labels("audit_sealer").set(max(lag, 0.0))
    if len(rows) < batch_size:
        return len(chained)
    return len(chained) + _pipelined_pass(batch_size)


def seal_pass(*, batch_size: int = BATCH_SIZE) -> int:
    """The sealer's pass: pipelined when it can (outside a transaction, no watched action), else
    `seal`. Returns how many events it sealed."""
    if connection.in_atomic_block:
        return seal(batch_size=batch_size)
    connection.ensure_connection()
    try:
        with metrics.AUDIT_WRITE.labels("seal").time():
            return _pipelined_pass(batch_size)
    except _Fallback:
        return seal(batch_size=batch_size)


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
    """One daemon thread per process, woken after each commit that recorded events.

    Each schema is sealed by one process at a time, its leader: the first whose thread takes the
    schema's leader lock (a session-level advisory try-lock, `LEADER_LOCK_CLASS`). The leader
    seals the schema every AUDIT_SEAL_INTERVAL_SECONDS while events keep coming, everyone's
    events in one pass; a woken process that finds another leader does nothing more, since that
    leader's next pass starts after this commit and seals it. After IDLE_PASSES passes with
    nothing to seal the leader lets go, then checks once more for unsealed events (committed by
    a process that saw it leading just before) and takes the lead again if there are: no commit
    is left without a pass after it. Wake-ups within an interval are handled together.

    A follower (it found the lead taken) tries again only FOLLOWER_INTERVALS intervals later,
    however often it is woken meanwhile: while the leader leads, it seals the follower's commits
    anyway, and a try per interval in every other process was most of the sealing's cost with 8
    writing processes. What that try covers is the rare hand-off (the leader let go between the
    follower's last try and its commit): such a commit waits up to FOLLOWER_INTERVALS + 1
    intervals instead of one.
    """

    def __init__(self) -> None:
        self._pending: dict[str, Tenant | None] = {}
        self._leading: dict[str, list] = {}  # schema -> [tenant, passes with nothing to seal]
        self._following: dict[str, float] = {}  # schema -> monotonic time of the next try
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
            # A thread with something led or pending (not followed) passes again within the
            # interval: only one idle or waiting for a follower's try needs the notification (and
            # its GIL hand-off), and only for a schema not pending yet.
            waiting = not self._leading and all(k in self._following for k in self._pending)
            fresh = key not in self._pending
            self._pending[key] = tenant
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="audit-sealer", daemon=True)
                self._thread.start()
            elif waiting and fresh:
                self._condition.notify()

    def stop(self) -> None:
        """Seal what is pending and led, close the thread's connection and end it (tests)."""
        with self._condition:
            thread, self._stopping = self._thread, True
            self._condition.notify()
        if thread is not None:
            thread.join(timeout=30)
        with self._condition:
            self._thread, self._stopping = None, False

    def _run(self) -> None:
        last_pass = checked_at = 0.0
        try:
            while True:
                with self._condition:
                    while not self._stopping:
                        if self._pending or self._leading:
                            wait = self._due(last_pass) - time.monotonic()
                            if wait <= 0:
                                break
                            self._condition.wait(wait)
                        elif not self._condition.wait(timeout=30):
                            connection.close()  # idle: give the connection back
                    woken, self._pending = self._pending, {}
                    stopping = self._stopping
                if time.monotonic() - checked_at > 1.0:  # at most once a second: a health
                    close_old_connections()  # check is one more round trip
                    checked_at = time.monotonic()
                last_pass = time.monotonic()
                if stopping:
                    for tenant in woken.values():
                        _seal_in_background(tenant)
                    for state in self._leading.values():
                        _let_go_sealed(state[0])
                    self._leading.clear()
                    return
                self._tick(woken)
        finally:
            self._leading.clear()
            self._following.clear()
            connection.close()  # also lets go of every leader lock

    def _due(self, last_pass: float) -> float:
        """When the next pass or try is due (with the condition held): one interval after the
        last pass, unless every pending schema is followed and nothing is led."""
        due = last_pass + interval()
        if self._leading or any(self._following.get(key, 0.0) <= due for key in self._pending):
            return due
        return min(self._following[key] for key in self._pending)

    def _tick(self, woken: dict[str, Tenant | None]) -> None:
        now = time.monotonic()
        for key, tenant in woken.items():
            if key in self._leading:
                continue
            if self._following.get(key, 0.0) > now:  # not yet: pending until then
                with self._condition:
                    self._pending.setdefault(key, tenant)
            elif _leader_call(tenant, _TAKE_LEAD):
                self._following.pop(key, None)
                self._leading[key] = [tenant, 0]
            else:
                self._following[key] = now + FOLLOWER_INTERVALS * interval()
        for key, state in list(self._leading.items()):
            if _pass_in(state[0]):
                state[1] = 0
                continue
            state[1] += 1
            if state[1] >= IDLE_PASSES:
                del self._leading[key]
                if _leader_call(state[0], _LET_GO):
                    self._leading[key] = [state[0], 0]


# The schema's leader lock, taken by a woken sealer thread (false: another process leads).
_TAKE_LEAD = ("SELECT pg_try_advisory_lock(%s, hashtext(current_schema()))",)
# Let go, then (a later statement, so a later snapshot) take the lead again if events committed
# meanwhile are unsealed. True: this process leads again.
_LET_GO = (
    "SELECT pg_advisory_unlock(%s, hashtext(current_schema()))",
    "SELECT CASE WHEN EXISTS (SELECT 1 FROM audit_auditevent WHERE sequence IS NULL)"
    " THEN pg_try_advisory_lock(%s, hashtext(current_schema())) ELSE false END",
)


def _leader_call(tenant: Tenant | None, statements: tuple[str, ...]) -> bool:
    """Run the leader lock's statements in one round trip; the last one's answer."""
    enter = context.public_context() if tenant is None else context.tenant_context(tenant)
    try:
        with enter:
            connection.ensure_connection()
            cursors = [connection.cursor() for _ in statements]
            with connection.connection.pipeline():
                for cursor, sql in zip(cursors, statements, strict=True):
                    cursor.execute(sql, [LEADER_LOCK_CLASS])
            answer = bool(cursors[-1].fetchone()[0])
            for cursor in cursors:
                cursor.close()
            return answer
    except Exception:  # a backstop (seal_audit, the next commit, any reader) seals them later
        logger.exception("the audit sealer's leader lock of %s failed", tenant or "the platform")
        connection.close()
        return False


def _let_go_sealed(tenant: Tenant | None) -> None:
    """Stopping: seal, let go, and seal again while events committed by processes that saw this
    one leading are unsealed (a pass that started before their commit did not see them)."""
    for _ in range(10):
        _seal_in_background(tenant)
        if not _leader_call(tenant, _LET_GO):
            return
    _leader_call(tenant, _LET_GO[:1])


def _pass_in(tenant: Tenant | None) -> int:
    """One pass over a schema this process leads; how many events it sealed (0 on error)."""
    enter = context.public_context() if tenant is None else context.tenant_context(tenant)
    try:
        with enter:
            return seal_pass()
    except Exception:
        logger.exception("sealing the audit log of %s failed", tenant or "the platform")
        connection.close()
        return 0


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
                seal_pass()
            except Exception:
                logger.exception("sealing the audit log after commit failed")

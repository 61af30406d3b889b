"""Failures from outside an organization (bad tokens and keys, failed sign-ins), recorded
aggregated: nobody outside can make an organization's log grow one row per request.

Failures are grouped by *source*: the client's address plus what failed (the action, the
resource, and grouping details such as the credential scheme and the refusal code), within a
fixed window (`AUDIT_FAILURE_WINDOW_SECONDS`, 60 s). Each failure is one UPSERT into
`FailureWindow` (no chain lock); the hash-chained log gets at most three rows per source and window,
each carrying `count` (the failures it stands for), `total` (the window's count so far), `first`
and `last`:

1. the first failure, at once (it is visible in the log as it happens);
2. the failure that brings the window to `AUDIT_FAILURE_ALERT_AT` (5), so that threshold rules
   (failed-logins, which sums `count`) fire as promptly as with one row per failure;
3. after the window has closed, a summary of the rest (`aggregated: true`), if any.

Closed windows are summarised lazily (when the next window of any source in the same schema
opens) and by `manage.py audit_flush_failures` (run it every minute; it is idempotent).
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from audit import chain
from audit.models import FailureWindow, Result
from audit.services import record
from core import metrics
from core.actors import Actor

FLUSH_BATCH = 100


# The table name is the model's (never input); values are parameters.
UPSERT = """
INSERT INTO {table} AS w (source, window_start, action, resource_type,
    resource_id, ip, user_agent, details, count, recorded, first_at, last_at)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, 1, 1, %s, %s)
ON CONFLICT (source, window_start) DO UPDATE SET
    count = w.count + 1,
    recorded = CASE WHEN w.count + 1 = %s THEN w.count + 1 ELSE w.recorded END,
    last_at = EXCLUDED.last_at
RETURNING count, first_at
"""


def _window_seconds() -> int:
    return int(getattr(settings, "AUDIT_FAILURE_WINDOW_SECONDS", 60))


def _alert_at() -> int:
    return int(getattr(settings, "AUDIT_FAILURE_ALERT_AT", 5))


def _window_start(now: datetime) -> datetime:
    seconds = _window_seconds()
    epoch = int(now.timestamp())
    return datetime.fromtimestamp(epoch - epoch % seconds, tz=now.tzinfo)


def _source(actor: Actor, action: str, resource_type: str, resource_id: str, details: Any) -> str:
    key = json.dumps(
        [actor.ip or "", action, resource_type, resource_id, details],
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def _row(
    window: dict[str, Any], *, count: int, total: int, aggregated: bool, last: datetime
) -> None:
    actor = Actor(
        kind="anonymous",
        label="anonymous",
        ip=window["ip"],
        user_agent=window["user_agent"],
    )
    record(
        actor=actor,
        action=window["action"],
        resource_type=window["resource_type"],
        resource_id=window["resource_id"],
        result=Result.FAILED,
        details={
            **window["details"],
            "count": count,
            "total": total,
            "first": window["first_at"].isoformat(),
            "last": last.isoformat(),
            "window_seconds": _window_seconds(),
            "aggregated": aggregated,
        },
    )


def failure_record(
    *,
    actor: Actor,
    action: str,
    resource_type: str = "",
    resource_id: str = "",
    details: dict[str, Any] | None = None,
) -> int:
    """Count one failure of `actor`'s source in the current schema; returns the window's count.

    Writes an audit row for the window's first failure and for the one reaching the alert
    threshold; the rest waits for the window's summary (module docstring).
    """
    with metrics.FAILURE_RECORD.time():
        return _failure_record(
            actor=actor,
            action=action,
            resource_type=resource_type,
            resource_id=resource_id,
            details=details,
        )


def _failure_record(
    *, actor: Actor, action: str, resource_type: str, resource_id: str, details: Any
) -> int:
    details = chain.clean_details(details or {})
    resource_type = chain.clean_text(resource_type, 64)
    resource_id = chain.clean_text(resource_id, 128)
    now = timezone.now()
    start = _window_start(now)
    source = _source(actor, action, resource_type, resource_id, details)
    alert_at = _alert_at()
    table = FailureWindow._meta.db_table
    with transaction.atomic():
        with connection.cursor() as cursor:
            statement = UPSERT.format(table=table)  # noqa: S608 # nosec B608 (the model's)
            cursor.execute(
                statement,
                [
                    source,
                    start,
                    chain.clean_text(action, 64),
                    resource_type,
                    resource_id,
                    chain.clean_ip(actor.ip),
                    chain.clean_text(actor.user_agent, 256),
                    json.dumps(details),
                    now,
                    now,
                    alert_at,
                ],
            )
            count, first_at = cursor.fetchone()
        window = {
            "action": action,
            "resource_type": resource_type,
            "resource_id": resource_id,
            "ip": chain.clean_ip(actor.ip),
            "user_agent": actor.user_agent,
            "details": details,
            "first_at": first_at,
        }
        if count == 1:
            _row(window, count=1, total=1, aggregated=False, last=now)
        elif count == alert_at:
            _row(window, count=alert_at - 1, total=count, aggregated=True, last=now)
    if count == 1:
        failures_flush()
    return count


def failures_flush(*, now: datetime | None = None, batches: int | None = 1) -> int:
    """Summarise the closed windows of the current schema into the log; returns rows written.

    `batches` bounds the work (FLUSH_BATCH windows each; None: every closed window). Safe to
    run concurrently (SKIP LOCKED) and repeatedly (a window is deleted once summarised).
    """
    now = now or timezone.now()
    cutoff = _window_start(now)
    oldest = (
        FailureWindow.objects.filter(window_start__lt=cutoff)
        .order_by("window_start")
        .values_list("window_start", flat=True)
        .first()
    )
    if oldest is not None:  # how long the oldest closed window waited for its summary
        closed_at = oldest + timedelta(seconds=_window_seconds())
        metrics.JOB_LAG.labels("audit_flush_failures").set((now - closed_at).total_seconds())
    written = 0
    done = 0
    while batches is None or done < batches:
        done += 1
        with transaction.atomic():
            closed = list(
                FailureWindow.objects.select_for_update(skip_locked=True)
                .filter(window_start__lt=cutoff)
                .order_by("window_start", "pk")[:FLUSH_BATCH]
            )
            for item in closed:
                if item.count > item.recorded:
                    window = {
                        "action": item.action,
                        "resource_type": item.resource_type,
                        "resource_id": item.resource_id,
                        "ip": item.ip,
                        "user_agent": item.user_agent,
                        "details": item.details,
                        "first_at": item.first_at,
                    }
                    _row(
                        window,
                        count=item.count - item.recorded,
                        total=item.count,
                        aggregated=True,
                        last=item.last_at,
                    )
                    written += 1
            FailureWindow.objects.filter(pk__in=[item.pk for item in closed]).delete()
        if len(closed) < FLUSH_BATCH:
            break
    return written


def login_failure_record(*, actor: Actor, email: str, method: str = "password") -> int:
    """A failed sign-in (portal or API), aggregated per client address and attempted account;
    the failed-logins rule sums `count` over its window. Never pass the password."""
    login = chain.clean_text(str(email).strip().lower(), 128)
    return failure_record(
        actor=actor,
        action="auth.login",
        resource_type="login",
        resource_id=login,
        details={"method": method},
    )


def window_of(moment: datetime) -> tuple[datetime, datetime]:
    """The window holding `moment` (start, end): for tests and the docs."""
    start = _window_start(moment)
    return start, start + timedelta(seconds=_window_seconds())

"""Helpers for the audit tests: reading an organization's events, tampering with them as a
superuser would, generous export limits."""

from __future__ import annotations

import pytest
from django.db import connection

from audit import chain
from audit.models import AuditEvent


def head() -> int:
    """The newest event's sequence in the current schema (0 for an empty log)."""
    last = AuditEvent.objects.order_by("-sequence").values_list("sequence", flat=True).first()
    return last or 0


def events_after(sequence: int) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(sequence__gt=sequence).order_by("sequence"))


def tamper(sql: str, params: list | None = None) -> None:
    """What a superuser can do: switch the (ordinary) triggers off for the transaction."""
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL session_replication_role = replica")
        cursor.execute(sql, params)
        cursor.execute("SET LOCAL session_replication_role = origin")


def backdate(days: int, *, through: int | None = None) -> None:
    """Age the log (all of it, or the events up to sequence `through`) as a superuser would, and
    re-seal the chain as it would have been: backdating changes what the hashes cover."""
    where, params = ("", [days]) if through is None else (" WHERE sequence <= %s", [days, through])
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL session_replication_role = replica")
        cursor.execute(
            "UPDATE audit_auditevent SET occurred_at = occurred_at - make_interval(days => %s)"
            + where,
            params,
        )
        previous = chain.GENESIS_HASH
        for event in list(AuditEvent.objects.order_by("sequence")):
            event.previous_hash = previous
            event.hash = chain.compute_hash(event)
            cursor.execute(
                "UPDATE audit_auditevent SET previous_hash = %s, hash = %s WHERE id = %s",
                [event.previous_hash, event.hash, event.pk],
            )
            previous = event.hash
        cursor.execute("SET LOCAL session_replication_role = origin")


@pytest.fixture(autouse=True)
def _generous_export_rate(settings):
    """Rate-limit counters live in Redis across tests: only the rate-limit tests set real ones."""
    settings.AUDIT_EXPORT_RATE = "100000/h"

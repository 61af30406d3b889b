"""Instance-seconds: how long each instance ran, metered on billing's usage ledger by agent.

An instance runs from its runtime's first `running` report (`started_at`) until it leaves
service (stopped, failed, or a stop requested: `stopped_at`). Its seconds are counted as they
pass, not only at the end: every `running` heartbeat adds the whole seconds since the last count
(`metered_until`), so the current period's usage report includes running instances up to their
last heartbeat, and an instance running across the end of a month is billed in each month for
its own seconds. Seconds fall in the ledger's hour they were run in.

The count is added after the transaction that advanced `metered_until` commits (a rolled-back
report counts nothing). Counting whole seconds of the epoch (`floor(until) - floor(since)`)
makes the counts of consecutive intervals add up exactly to the instance's whole run.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from django.db import transaction

from billing import services as billing
from billing.ledger import Count
from tenants import context

if TYPE_CHECKING:
    from agents.models import AgentInstance

METER = "instance_seconds"
HOUR = 3600


def instance_seconds(*, agent_id: str, since: datetime, until: datetime) -> list[Count]:
    """The ledger counts for an instance of `agent_id` that ran from `since` to `until`, one per
    hour it touches."""
    start, end = math.floor(since.timestamp()), math.floor(until.timestamp())
    counts = []
    while start < end:
        edge = min(end, (start // HOUR + 1) * HOUR)
        counts.append(
            Count(
                meter=METER,
                amount=edge - start,
                groups={"agent": agent_id},
                at=datetime.fromtimestamp(start, UTC),
            )
        )
        start = edge
    return counts


def meter_on_commit(instance: AgentInstance, *, until: datetime) -> None:
    """Count `instance`'s seconds since its last count up to `until` and advance its
    `metered_until` (the caller saves that field in its transaction). Nothing for an instance
    that never ran."""
    since = instance.metered_until or instance.started_at
    if since is None or until <= since:
        return
    counts = instance_seconds(agent_id=str(instance.agent_id), since=since, until=until)
    instance.metered_until = until
    if counts:
        tenant = context.require_tenant()
        transaction.on_commit(lambda: billing.usage_add(tenant=tenant, counts=counts))

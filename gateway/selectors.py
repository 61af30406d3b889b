"""Reads of the gateway: recent per-minute metrics of an agent's instances."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.core.exceptions import PermissionDenied
from django.utils import timezone

from core.actors import Actor
from gateway.models import InstanceMetric

WINDOW_MINUTES = 15


def agent_metrics_recent(*, actor: Actor, agent_id: Any) -> list[dict[str, Any]]:
    """The last 15 minutes of metrics of an agent's instances, oldest first (for the chart)."""
    if not actor.can("agents:read"):
        raise PermissionDenied("This needs the “agents:read” permission.")
    since = timezone.now() - timedelta(minutes=WINDOW_MINUTES)
    rows = InstanceMetric.objects.filter(agent_id=agent_id, minute__gte=since).order_by("minute")
    return [
        {
            "instance": str(row.instance_id),
            "minute": row.minute.isoformat(),
            "cpu_percent": row.cpu_percent,
            "memory_mb": row.memory_mb,
            "queue_depth": row.queue_depth,
            "response_ms": row.response_ms,
            "tasks_done": row.tasks_done,
        }
        for row in rows
    ]


def instance_minutes_since(since: Any) -> int:
    """How many instance-minutes the current organization's agents reported since `since`: its
    recent usage, for placing it among shards (scaling.rebalance). Platform-internal: no actor."""
    return InstanceMetric.objects.filter(minute__gte=since).count()

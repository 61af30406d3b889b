"""Reads of the gateway: recent per-minute metrics of an agent's instances."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.core.exceptions import PermissionDenied
from django.db.models import Avg, Count
from django.utils import timezone

from agents.models import InstanceStatus
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


def agent_minutes(agent_id: Any, *, since: Any) -> list[dict[str, Any]]:
    """Per minute since `since`, oldest first: how many running instances of the agent reported,
    and their mean cpu %, memory (MiB), queue depth and response time. What the autoscaler
    reads (autoscaler.selectors); platform-internal: no actor."""
    rows = (
        InstanceMetric.objects.filter(
            agent_id=agent_id, minute__gte=since, instance__status=InstanceStatus.RUNNING
        )
        .values("minute")
        .annotate(
            instances=Count("instance_id", distinct=True),
            cpu_percent=Avg("cpu_percent"),
            memory_mb=Avg("memory_mb"),
            queue_depth=Avg("queue_depth"),
            response_ms=Avg("response_ms"),
        )
        .order_by("minute")
    )
    return list(rows)


def instance_latest_load(instance_ids: list[Any]) -> dict[Any, tuple[int, float]]:
    """Each instance's queue depth and cpu % in its latest reported minute (the autoscaler stops
    the least loaded first); instances that never reported are absent. Platform-internal."""
    rows = (
        InstanceMetric.objects.filter(instance_id__in=instance_ids)
        .order_by("instance_id", "-minute")
        .distinct("instance_id")
        .values_list("instance_id", "queue_depth", "cpu_percent")
    )
    return {instance_id: (queue, cpu) for instance_id, queue, cpu in rows}

"""Helpers for the autoscaler tests: agents whose running instances reported given metrics."""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

from agents import services as agent_services
from autoscaler import services
from gateway.models import InstanceMetric
from tests.agents.conftest import make_agent, system

POLICY = {
    "is_enabled": True,
    "min_instances": 1,
    "max_instances": 5,
    "window_minutes": 3,
    "scale_up_cooldown_seconds": 180,
    "scale_down_cooldown_seconds": 600,
    "cpu_up": 75.0,
    "cpu_down": 25.0,
    "memory_up": None,
    "memory_down": None,
    "queue_up": 10.0,
    "queue_down": 1.0,
    "response_up": None,
    "response_down": None,
}


def report(instance, *, cpu: list[float], queue: list[int] | None = None) -> None:
    """One row per minute, ending this minute, as the gateway stores heartbeats (the latest
    sample of a minute wins)."""
    now = timezone.now().replace(second=0, microsecond=0)
    queue = queue or [0] * len(cpu)
    for index, (load, waiting) in enumerate(zip(cpu, queue, strict=True)):
        InstanceMetric.objects.update_or_create(
            instance=instance,
            minute=now - timedelta(minutes=len(cpu) - 1 - index),
            defaults={
                "agent_id": instance.agent_id,
                "cpu_percent": load,
                "memory_mb": 100,
                "queue_depth": waiting,
                "response_ms": 50,
                "tasks_done": index,
            },
        )


def running_agent(name: str, *, instances: int, cpu: list[float], queue=None, **policy):
    """An agent with `instances` running instances that reported `cpu` (and `queue`) per minute,
    and an enabled policy (POLICY, changed by `policy`)."""
    agent = make_agent(name)
    started = []
    for _ in range(instances):
        instance = agent_services.instance_request(actor=system(), agent_id=agent.pk)
        agent_services.instance_report(actor=system(), instance_id=instance.pk, status="running")
        report(instance, cpu=cpu, queue=queue)
        started.append(instance)
    services.policy_set(actor=system(), agent_id=agent.pk, **{**POLICY, **policy})
    return agent, started

"""Reads of the autoscaler: an agent's policy (the defaults until one is saved), its recent
minutes of metrics, its last decisions, and what the autoscaler would do now."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet

from agents import selectors as agent_selectors
from agents.models import Agent, AgentInstance, InstanceStatus
from autoscaler import rules
from autoscaler.models import MAX_WINDOW_MINUTES, ScalingDecision, ScalingPolicy
from core.actors import Actor
from gateway import selectors as gateway_selectors

DECISIONS_SHOWN = 10


def policy_of(agent: Agent) -> ScalingPolicy:
    """The agent's saved policy, or the defaults (unsaved, disabled) when it has none."""
    policy = ScalingPolicy.objects.filter(agent=agent).first()
    return policy if policy is not None else ScalingPolicy(agent=agent)


def policy_get(*, actor: Actor, agent_id: Any) -> ScalingPolicy:
    """An agent's policy; Agent.DoesNotExist for another organization's agent (a 404)."""
    agent = agent_selectors.agent_get(actor=actor, agent_id=agent_id)
    return policy_of(agent)


def decision_list(*, actor: Actor, agent: Agent) -> QuerySet[ScalingDecision]:
    """The agent's decisions, newest first (`agent` comes from agent_get: one of ours)."""
    if not actor.can("agents:read"):
        raise PermissionDenied("This needs the “agents:read” permission.")
    return ScalingDecision.objects.filter(agent=agent)


def last_decided_at(agent: Agent) -> datetime | None:
    return (
        ScalingDecision.objects.filter(agent=agent)
        .order_by("-decided_at")
        .values_list("decided_at", flat=True)
        .first()
    )


def recent_minutes(agent: Agent, *, now: datetime) -> list[rules.Minute]:
    """The agent's running instances' metrics per minute, over the longest window a policy has."""
    since = now.replace(second=0, microsecond=0) - timedelta(minutes=MAX_WINDOW_MINUTES)
    return [
        rules.Minute(
            minute=row["minute"],
            instances=row["instances"],
            cpu=row["cpu_percent"],
            memory=100.0 * row["memory_mb"] / agent.memory_mb,
            queue=row["queue_depth"],
            response=row["response_ms"],
        )
        for row in gateway_selectors.agent_minutes(agent.pk, since=since)
    ]


def active_instances(*, actor: Actor, agent: Agent) -> list[AgentInstance]:
    """The instances holding resources (pending and running), newest first."""
    return list(
        agent_selectors.instance_list(actor=actor, agent=agent).filter(
            status__in=[InstanceStatus.PENDING, InstanceStatus.RUNNING]
        )
    )


@dataclass(frozen=True)
class State:
    """What the agent's page shows: the policy, the fleet, and the autoscaler's view of now."""

    policy: ScalingPolicy
    active: int
    pending: int
    evaluation: rules.Evaluation
    decisions: list[ScalingDecision]


def evaluate(
    *, actor: Actor, agent: Agent, policy: ScalingPolicy, now: datetime
) -> tuple[rules.Evaluation, list[AgentInstance]]:
    instances = active_instances(actor=actor, agent=agent)
    evaluation = rules.decide(
        policy,
        recent_minutes(agent, now=now),
        now=now,
        active=len(instances),
        pending=sum(1 for i in instances if i.status == InstanceStatus.PENDING),
        last_decided_at=last_decided_at(agent),
    )
    return evaluation, instances


def state_get(*, actor: Actor, agent: Agent, now: datetime) -> State:
    policy = policy_of(agent)
    evaluation, instances = evaluate(actor=actor, agent=agent, policy=policy, now=now)
    return State(
        policy=policy,
        active=len(instances),
        pending=sum(1 for i in instances if i.status == InstanceStatus.PENDING),
        evaluation=evaluation,
        decisions=list(decision_list(actor=actor, agent=agent)[:DECISIONS_SHOWN]),
    )

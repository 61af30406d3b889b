"""Every write of the autoscaler: an agent's policy (admins), and the decisions it takes and
carries out as the system, through agents' own instance services (pool limits, audit, events).

A decision is recorded once it was carried out, whatever the pool allowed: one audit event
`scaling.decided` and one event on the organization's `scaling.decided` subject after commit.
A refusal by the pool is the decision's outcome, never an error, and starts its cooldown too.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import connection, transaction
from django.utils import timezone

from agents import selectors as agent_selectors
from agents import services as agent_services
from agents.models import Agent, AgentInstance, InstanceStatus
from audit import services as audit
from autoscaler import rules, selectors
from autoscaler.models import (
    MAX_COOLDOWN_SECONDS,
    MAX_INSTANCES_CEILING,
    MAX_WINDOW_MINUTES,
    METRIC_NAMES,
    ScalingDecision,
    ScalingPolicy,
)
from core.actors import Actor
from core.errors import QuotaExceeded
from gateway import selectors as gateway_selectors

POLICY_PERMISSION = "config:write"
POLICY_ACTION = "scaling.policy_changed"
DECISION_ACTION = "scaling.decided"
LOCK_CLASS = 0x5343414C  # "SCAL": one autoscaler pass per organization at a time
MAX_THRESHOLD = 1_000_000
BOUNDS = {
    "min_instances": (1, MAX_INSTANCES_CEILING),
    "max_instances": (1, MAX_INSTANCES_CEILING),
    "window_minutes": (1, MAX_WINDOW_MINUTES),
    "scale_up_cooldown_seconds": (0, MAX_COOLDOWN_SECONDS),
    "scale_down_cooldown_seconds": (0, MAX_COOLDOWN_SECONDS),
}
THRESHOLDS = tuple(f"{name}_{side}" for name in METRIC_NAMES for side in ("up", "down"))
POLICY_FIELDS = ("is_enabled", *BOUNDS, *THRESHOLDS)


def policy_payload(policy: ScalingPolicy) -> dict[str, Any]:
    return {
        "agent_id": str(policy.agent_id),
        **{name: getattr(policy, name) for name in POLICY_FIELDS},
    }


def _clean_policy(data: dict[str, Any]) -> dict[str, Any]:
    """Every field, checked at once: ValidationError names each bad one."""
    problems: dict[str, list[ValidationError]] = {}

    def bad(name: str, message: str, code: str = "invalid") -> None:
        problems.setdefault(name, []).append(ValidationError(message, code=code))

    unknown = sorted(set(data) - set(POLICY_FIELDS))
    for name in unknown:
        bad(str(name)[:64], "Unknown field.", "unknown")
    clean: dict[str, Any] = {}
    for name in POLICY_FIELDS:
        if name not in data:
            bad(name, "This field is required.", "required")
    if "is_enabled" in data:
        if isinstance(data["is_enabled"], bool):
            clean["is_enabled"] = data["is_enabled"]
        else:
            bad("is_enabled", "Must be true or false.")
    for name, (low, high) in BOUNDS.items():
        if name not in data:
            continue
        value = data[name]
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            bad(name, f"A whole number from {low} to {high}.", "out_of_range")
        else:
            clean[name] = value
    if clean.get("max_instances", MAX_INSTANCES_CEILING) < clean.get("min_instances", 1):
        bad("max_instances", "At least the minimum.", "below_minimum")
    for name in THRESHOLDS:
        if name not in data:
            continue
        value = data[name]
        if value is None:
            clean[name] = None
        elif (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or not 0 <= value <= MAX_THRESHOLD
        ):
            bad(name, f"A number from 0 to {MAX_THRESHOLD:,}, or empty.", "out_of_range")
        else:
            clean[name] = float(value)
    for metric in METRIC_NAMES:
        up, down = f"{metric}_up", f"{metric}_down"
        if up in problems or down in problems or up not in clean or down not in clean:
            continue
        if (clean[up] is None) != (clean[down] is None):
            bad(down if clean[down] is None else up, "Set both thresholds, or neither.", "pair")
        elif clean[up] is not None and clean[down] >= clean[up]:
            bad(down, "Below the scale-up threshold.", "not_below_up")
    watched = [m for m in METRIC_NAMES if clean.get(f"{m}_up") is not None]
    if clean.get("is_enabled") and not watched and not any(n in problems for n in THRESHOLDS):
        bad("is_enabled", "Watch at least one metric (set its two thresholds).", "no_metric")
    if problems:
        raise ValidationError(problems)
    return clean


def policy_set(*, actor: Actor, agent_id: Any, **data: Any) -> ScalingPolicy:
    """Replace an agent's scaling policy (every field given). Audited and announced as
    `scaling.policy_changed` with the fields that changed; the same policy again changes nothing."""
    audit.require(
        actor, POLICY_PERMISSION, action=POLICY_ACTION, resource_type="agent", resource_id=agent_id
    )
    agent = agent_selectors.agent_get(actor=actor, agent_id=agent_id)
    clean = _clean_policy(data)
    with transaction.atomic():
        policy, created = ScalingPolicy.objects.select_for_update().get_or_create(agent=agent)
        changed = [name for name in POLICY_FIELDS if getattr(policy, name) != clean[name]]
        if not changed and not created:
            return policy
        for name in POLICY_FIELDS:
            setattr(policy, name, clean[name])
        policy.updated_at = timezone.now()
        policy.updated_by = actor.label
        policy.save()
        payload = policy_payload(policy)
        audit.emit(
            actor=actor,
            action=POLICY_ACTION,
            resource_type="agent",
            resource_id=agent.pk,
            details={"name": agent.name, "changed": changed, **payload},
            data={**payload, "changed": changed},
        )
    return policy


# --- Decisions -------------------------------------------------------------------------------


def _scale_up(actor: Actor, agent: Agent, evaluation: rules.Evaluation) -> tuple[int, str]:
    started = 0
    for _ in range(evaluation.target - evaluation.current):
        try:
            agent_services.instance_request(actor=actor, agent_id=agent.pk)
        except QuotaExceeded as error:
            reached = evaluation.current + started
            return started, (
                f"Pool full ({error.message}): scaled to {reached} of wanted {evaluation.target}."
                if started
                else f"Refused by the pool ({error.message}): stayed at {reached}."
            )
        started += 1
    return started, f"Scaled up to {evaluation.target}."


def _stop_order(instances: list[AgentInstance]) -> list[AgentInstance]:
    """Pending instances first (nothing attached yet), then the least loaded running ones (queue,
    then cpu, in their latest minute), the newest first among equals."""
    load = gateway_selectors.instance_latest_load([i.pk for i in instances])
    newest_first = sorted(instances, key=lambda i: i.requested_at, reverse=True)
    return sorted(
        newest_first,
        key=lambda i: (i.status != InstanceStatus.PENDING, load.get(i.pk, (0, 0.0))),
    )


def _scale_down(
    actor: Actor, agent: Agent, evaluation: rules.Evaluation, instances: list[AgentInstance]
) -> tuple[int, str]:
    stopping = _stop_order(instances)[: evaluation.current - evaluation.target]
    for instance in stopping:
        agent_services.instance_stop(actor=actor, agent_id=agent.pk, instance_id=instance.pk)
    return -len(stopping), f"Scaled down to {evaluation.target}."


def agent_autoscale(
    *, actor: Actor, agent: Agent, now: datetime | None = None
) -> ScalingDecision | None:
    """Evaluate one agent's policy now and carry the change out; None when it holds."""
    if actor.kind != "system":
        raise PermissionDenied("Only the platform's autoscaler scales agents.")
    now = now or timezone.now()
    policy = selectors.policy_of(agent)
    evaluation, instances = selectors.evaluate(actor=actor, agent=agent, policy=policy, now=now)
    if not evaluation.is_change:
        return None
    if evaluation.direction == rules.UP:
        change, outcome = _scale_up(actor, agent, evaluation)
    else:
        change, outcome = _scale_down(actor, agent, evaluation, instances)
    with transaction.atomic():
        decision = ScalingDecision.objects.create(
            agent=agent,
            decided_at=now,
            direction=evaluation.direction,
            from_count=evaluation.current,
            wanted_count=evaluation.target,
            to_count=evaluation.current + change,
            reason=evaluation.reason[:500],
            outcome=outcome[:500],
            metrics=evaluation.metrics,
            decided_by=actor.label,
        )
        payload = decision_payload(decision)
        audit.emit(
            actor=actor,
            action=DECISION_ACTION,
            resource_type="agent",
            resource_id=agent.pk,
            details={"name": agent.name, **payload},
            data=payload,
        )
    return decision


def decision_payload(decision: ScalingDecision) -> dict[str, Any]:
    return {
        "agent_id": str(decision.agent_id),
        "decided_at": decision.decided_at.isoformat(),
        "direction": decision.direction,
        "from": decision.from_count,
        "wanted": decision.wanted_count,
        "to": decision.to_count,
        "reason": decision.reason,
        "outcome": decision.outcome,
    }


@contextmanager
def _organization_lock() -> Iterator[bool]:
    """One autoscaler pass per organization at a time (a session advisory lock: no row, no
    transaction held): a second process skips the organization."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s, hashtext(current_schema()))", [LOCK_CLASS])
        acquired = bool(cursor.fetchone()[0])
    try:
        yield acquired
    finally:
        if acquired:
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT pg_advisory_unlock(%s, hashtext(current_schema()))", [LOCK_CLASS]
                )


def organization_autoscale(*, actor: Actor, now: datetime | None = None) -> list[ScalingDecision]:
    """One pass over the current organization's enabled policies; the decisions taken."""
    if actor.kind != "system":
        raise PermissionDenied("Only the platform's autoscaler scales agents.")
    decisions: list[ScalingDecision] = []
    with _organization_lock() as acquired:
        if not acquired:
            return decisions
        policies = ScalingPolicy.objects.filter(is_enabled=True).select_related("agent")
        for policy in list(policies.order_by("agent__name")):
            try:
                decision = agent_autoscale(actor=actor, agent=policy.agent, now=now)
            except (Agent.DoesNotExist, AgentInstance.DoesNotExist):
                continue  # the agent was deleted during the pass
            if decision is not None:
                decisions.append(decision)
    return decisions

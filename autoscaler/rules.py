"""The autoscaler's decision, a pure function of a policy, the agent's recent metrics and its
last decision: no database, no clock of its own (tests/autoscaler/test_rules.py is its table)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from autoscaler.models import METRIC_NAMES

UP, DOWN, HOLD = "up", "down", "hold"
LABELS = {"cpu": "CPU", "memory": "memory", "queue": "queue depth", "response": "response time"}
UNITS = {"cpu": "%", "memory": "%", "queue": " per instance", "response": " ms"}
MINUTE = timedelta(minutes=1)


@dataclass(frozen=True)
class Minute:
    """One minute of an agent's running instances, averaged over those that reported in it."""

    minute: datetime
    instances: int
    cpu: float  # %
    memory: float  # % of the instance's memory allocation
    queue: float  # tasks waiting, per instance
    response: float  # ms


@dataclass(frozen=True)
class Evaluation:
    """What the autoscaler does now (`direction` up, down or hold) and why, in words."""

    direction: str
    current: int
    target: int
    reason: str
    metrics: dict[str, list[float]] = field(default_factory=dict)
    cooldown_until: datetime | None = None

    @property
    def is_change(self) -> bool:
        return self.direction != HOLD


def watched(policy: Any) -> list[str]:
    """The metrics whose two thresholds are set."""
    return [
        name
        for name in METRIC_NAMES
        if getattr(policy, f"{name}_up") is not None and getattr(policy, f"{name}_down") is not None
    ]


def scale_up_target(current: int, maximum: int) -> int:
    """Up by half (rounded up), at least one instance, never above the maximum."""
    return min(maximum, current + max(1, math.ceil(current * 0.5)))


def _threshold(policy: Any, name: str, side: str) -> str:
    return f"{getattr(policy, f'{name}_{side}'):g}"


def _value(name: str, value: float) -> str:
    return f"{LABELS[name]} {value:g}{UNITS[name]}"


def _window(
    policy: Any, minutes: list[Minute], now: datetime, last_decided_at: datetime | None
) -> list[Minute] | str:
    """The last `window_minutes` minutes, consecutive, all after the last decision and ending at
    this minute or the one before; else why not (in words)."""
    this_minute = now.replace(second=0, microsecond=0)
    usable = sorted(
        (m for m in minutes if m.minute <= now and m.instances > 0),
        key=lambda m: m.minute,
    )
    if last_decided_at is not None:
        # A minute that began before the last change measured the fleet before it.
        usable = [m for m in usable if m.minute > last_decided_at]
    if not usable:
        if last_decided_at is not None:
            return "Waiting for metrics since the last change."
        return "Waiting for metrics from the running instances."
    latest = usable[-1].minute
    if latest < this_minute - MINUTE:
        return f"No recent metrics: the last are from {latest:%H:%M} UTC."
    by_minute = {m.minute: m for m in usable}
    wanted = [latest - MINUTE * back for back in range(policy.window_minutes - 1, -1, -1)]
    present = [by_minute[m] for m in wanted if m in by_minute]
    if len(present) < len(wanted):
        return (
            f"Waiting for metrics: {len(present)} of {policy.window_minutes} minutes in a row"
            + (" since the last change." if last_decided_at is not None else ".")
        )
    return present


def decide(
    policy: Any,
    minutes: list[Minute],
    *,
    now: datetime,
    active: int,
    pending: int = 0,
    last_decided_at: datetime | None = None,
) -> Evaluation:
    """Scale `active` instances (pending ones included; `pending` of them not attached yet)."""

    def hold(reason: str, **extra: Any) -> Evaluation:
        return Evaluation(HOLD, active, active, reason, **extra)

    if not policy.is_enabled:
        return hold("Autoscaling is off.")
    if active == 0:
        return hold("Not running: the autoscaler scales an agent once an instance runs.")
    metrics: dict[str, list[float]] = {}
    if active < policy.min_instances:
        direction, target = UP, policy.min_instances
        reason = f"Below the minimum of {policy.min_instances}"
    elif active > policy.max_instances:
        direction, target = DOWN, policy.max_instances
        reason = f"Above the maximum of {policy.max_instances}"
    else:
        names = watched(policy)
        if not names:
            return hold("No metric is watched: set the thresholds of at least one.")
        window = _window(policy, minutes, now, last_decided_at)
        if isinstance(window, str):
            return hold(window)
        metrics = {name: [round(getattr(m, name), 2) for m in window] for name in names}
        span = f"for {policy.window_minutes} min"
        high = [name for name in names if min(metrics[name]) >= getattr(policy, f"{name}_up")]
        low = all(max(metrics[name]) <= getattr(policy, f"{name}_down") for name in names)
        if high:
            reason = "; ".join(
                f"{_value(name, min(metrics[name]))} or more (≥ {_threshold(policy, name, UP)}) "
                + span
                for name in high
            )
            if active >= policy.max_instances:
                return hold(f"At the maximum of {policy.max_instances}: {reason}.", metrics=metrics)
            direction, target = UP, scale_up_target(active, policy.max_instances)
        elif low:
            reason = "; ".join(
                f"{_value(name, max(metrics[name]))} at most (≤ {_threshold(policy, name, DOWN)})"
                for name in names
            )
            reason += f" {span}"
            if active <= policy.min_instances:
                return hold(f"At the minimum of {policy.min_instances}: {reason}.", metrics=metrics)
            direction, target = DOWN, active - 1
        else:
            latest = ", ".join(_value(name, metrics[name][-1]) for name in names)
            return hold(f"Within thresholds: {latest}.", metrics=metrics)
    cooldown = (
        policy.scale_up_cooldown_seconds if direction == UP else policy.scale_down_cooldown_seconds
    )
    if last_decided_at is not None:
        until = last_decided_at + timedelta(seconds=cooldown)
        if now < until:
            return hold(
                f"Cooling down until {until:%H:%M:%S} UTC "
                f"(then {direction} to {target}: {reason}).",
                metrics=metrics,
                cooldown_until=until,
            )
    if direction == UP and pending:
        return hold(
            f"Waiting for {pending} pending instance{'s' if pending > 1 else ''} to attach "
            f"before scaling up ({reason}).",
            metrics=metrics,
        )
    return Evaluation(direction, active, target, reason, metrics)

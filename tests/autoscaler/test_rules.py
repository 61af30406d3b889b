"""The autoscaler's decision against a table of metric sequences (pure: no database)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from autoscaler import rules
from autoscaler.models import ScalingPolicy

NOW = datetime(2026, 12, 3, 10, 30, 20, tzinfo=UTC)
THIS_MINUTE = NOW.replace(second=0)


def policy(**fields) -> ScalingPolicy:
    """The defaults (cpu 75/25, queue 10/1, window 3 min, cooldowns 180 s up, 600 s down), on."""
    return ScalingPolicy(**{"is_enabled": True, "min_instances": 1, "max_instances": 5, **fields})


def series(cpu, queue=None, memory=None, response=None, *, end=0, instances=1):
    """Minutes ending `end` minutes before this one, oldest first; `None` for a missing minute."""
    count = len(cpu)
    queue = queue or [0] * count
    memory = memory or [10] * count
    response = response or [100] * count
    minutes = []
    for index in range(count):
        if cpu[index] is None:
            continue
        minutes.append(
            rules.Minute(
                minute=THIS_MINUTE - timedelta(minutes=end + count - 1 - index),
                instances=instances,
                cpu=cpu[index],
                memory=memory[index],
                queue=queue[index],
                response=response[index],
            )
        )
    return minutes


def ago(seconds: int) -> datetime:
    return NOW - timedelta(seconds=seconds)


HIGH, LOW, MID = [90, 85, 80], [10, 5, 12], [50, 50, 50]

# name, policy fields, minutes, active, pending, last decided, direction, target, reason part
TABLE = [
    ("cpu high for the window: up by half", {}, series(HIGH), 2, 0, None, "up", 3, "CPU 80%"),
    ("one instance: up by at least one", {}, series(HIGH), 1, 0, None, "up", 2, "for 3 min"),
    ("three: up by half, rounded up", {}, series(HIGH), 3, 0, None, "up", 5, "≥ 75"),
    ("four: up by two", {"max_instances": 10}, series(HIGH), 4, 0, None, "up", 6, ""),
    ("never above the maximum", {}, series(HIGH), 4, 0, None, "up", 5, ""),
    ("at the maximum: hold", {}, series(HIGH), 5, 0, None, "hold", 5, "At the maximum of 5"),
    ("a dip in the window: hold", {}, series([90, 70, 90]), 2, 0, None, "hold", 2, "Within"),
    ("too few minutes yet", {}, series([90, 90]), 2, 0, None, "hold", 2, "2 of 3 minutes"),
    ("a missing minute", {}, series([90, None, 90]), 2, 0, None, "hold", 2, "2 of 3 minutes"),
    ("stale metrics", {}, series(HIGH, end=2), 2, 0, None, "hold", 2, "No recent metrics"),
    ("the last minute closed", {}, series(HIGH, end=1), 2, 0, None, "up", 3, ""),
    ("no metrics at all", {}, [], 2, 0, None, "hold", 2, "Waiting for metrics"),
    (
        "queue depth alone",
        {},
        series(MID, queue=[12, 15, 11]),
        2,
        0,
        None,
        "up",
        3,
        "queue depth 11 per instance or more",
    ),
    (
        "memory, when watched",
        {"memory_up": 80, "memory_down": 20},
        series(MID, memory=[85, 90, 81]),
        2,
        0,
        None,
        "up",
        3,
        "memory 81%",
    ),
    (
        "response time, when watched",
        {"response_up": 1000, "response_down": 100},
        series(MID, response=[1500, 1200, 1100]),
        2,
        0,
        None,
        "up",
        3,
        "response time 1100 ms",
    ),
    (
        "an unwatched metric is ignored",
        {},
        series(MID, memory=[99, 99, 99], response=[9000, 9000, 9000]),
        2,
        0,
        None,
        "hold",
        2,
        "Within thresholds: CPU 50%, queue depth 0 per instance",
    ),
    ("low for the window: down by one", {}, series(LOW), 3, 0, None, "down", 2, "CPU 12%"),
    ("low cpu, busy queue: hold", {}, series(LOW, queue=[0, 5, 0]), 3, 0, None, "hold", 3, ""),
    ("at the minimum: hold", {"min_instances": 2}, series(LOW), 2, 0, None, "hold", 2, "minimum"),
    ("below the minimum: up to it", {"min_instances": 3}, [], 1, 0, None, "up", 3, "Below"),
    ("above the maximum: down to it", {}, [], 7, 0, None, "down", 5, "Above the maximum of 5"),
    ("off", {"is_enabled": False}, series(HIGH), 2, 0, None, "hold", 2, "off"),
    ("not running", {}, series(HIGH), 0, 0, None, "hold", 0, "Not running"),
    (
        "nothing watched",
        {"cpu_up": None, "cpu_down": None, "queue_up": None, "queue_down": None},
        series(HIGH),
        2,
        0,
        None,
        "hold",
        2,
        "No metric is watched",
    ),
    (
        "up waits for the pending instances",
        {},
        series(HIGH),
        3,
        1,
        None,
        "hold",
        3,
        "Waiting for 1 pending instance to attach",
    ),
    ("down does not wait for pending ones", {}, series(LOW), 3, 1, None, "down", 2, ""),
    (
        "the minutes before the last change do not count",
        {},
        series([90] * 10),
        2,
        0,
        ago(90),  # 10:28:50: only 10:29 and 10:30 are after it
        "hold",
        2,
        "2 of 3 minutes in a row since the last change",
    ),
    (
        "up cooldown",
        {"window_minutes": 1},
        series(HIGH),
        2,
        0,
        ago(100),
        "hold",
        2,
        "Cooling down until 10:31:40 UTC (then up to 3",
    ),
    ("up after its cooldown", {"window_minutes": 1}, series(HIGH), 2, 0, ago(200), "up", 3, ""),
    (
        "down has the longer cooldown",
        {"window_minutes": 1},
        series(LOW),
        3,
        0,
        ago(400),
        "hold",
        3,
        "Cooling down until 10:33:40 UTC (then down to 2",
    ),
    ("down after its cooldown", {"window_minutes": 1}, series(LOW), 3, 0, ago(700), "down", 2, ""),
    (
        "the minimum is kept after a cooldown too",
        {"min_instances": 2},
        [],
        1,
        0,
        ago(60),
        "hold",
        1,
        "Cooling down",
    ),
]


@pytest.mark.parametrize(
    ("fields", "minutes", "active", "pending", "last", "direction", "target", "reason"),
    [row[1:] for row in TABLE],
    ids=[row[0] for row in TABLE],
)
def test_decisions(fields, minutes, active, pending, last, direction, target, reason):
    evaluation = rules.decide(
        policy(**fields), minutes, now=NOW, active=active, pending=pending, last_decided_at=last
    )

    assert (evaluation.direction, evaluation.current, evaluation.target) == (
        direction,
        active,
        target,
    )
    assert reason in evaluation.reason


def test_a_decision_carries_the_windows_values_and_a_cooldown_its_end():
    evaluation = rules.decide(policy(), series(HIGH, queue=[1, 2, 3]), now=NOW, active=2)
    assert evaluation.metrics == {"cpu": [90, 85, 80], "queue": [1, 2, 3]}
    assert evaluation.cooldown_until is None

    cooling = rules.decide(
        policy(window_minutes=1), series(HIGH), now=NOW, active=2, last_decided_at=ago(100)
    )
    assert cooling.cooldown_until == ago(100) + timedelta(seconds=180)


@pytest.mark.parametrize(
    ("current", "maximum", "target"),
    [(1, 10, 2), (2, 10, 3), (3, 10, 5), (4, 10, 6), (5, 10, 8), (10, 10, 10), (9, 10, 10)],
)
def test_up_is_half_again_rounded_up_at_least_one_within_the_maximum(current, maximum, target):
    assert rules.scale_up_target(current, maximum) == target


def simulate(scaling: ScalingPolicy, cpu_per_minute: list[float], active: int) -> list[tuple]:
    """Run the autoscaler every minute (at :20) over a load that follows `cpu_per_minute` split
    across the instances (cpu% = load / instances); apply each decision at once."""
    start = THIS_MINUTE - timedelta(minutes=len(cpu_per_minute))
    minutes: list[rules.Minute] = []
    last = None
    taken = []
    for index, load in enumerate(cpu_per_minute):
        minute = start + timedelta(minutes=index)
        minutes.append(rules.Minute(minute, active, load / active, 10, 0, 100))
        now = minute + timedelta(seconds=20)
        evaluation = rules.decide(scaling, minutes, now=now, active=active, last_decided_at=last)
        if evaluation.is_change:
            taken.append((index, evaluation.direction, active, evaluation.target))
            active, last = evaluation.target, now
    return taken


def test_a_load_that_swings_every_minute_never_scales():
    assert simulate(policy(), [90, 10] * 20, active=2) == []


def test_a_spike_scales_up_once_per_cooldown_and_down_slowly_after_it():
    # Total load of 3 busy instances for 12 minutes, then almost nothing for 30.
    taken = simulate(policy(), [270] * 12 + [20] * 30, active=1)

    assert taken == [
        (2, "up", 1, 2),  # minutes 0-2 at 270%: hot for the window
        (5, "up", 2, 3),  # 135% each: three minutes after the change (cooldown 180 s over)
        (8, "up", 3, 5),  # 90% each: hot still; then 54% each, within thresholds
        # Low from minute 12, but each step down waits 600 s after the last change.
        (18, "down", 5, 4),
        (28, "down", 4, 3),
        (38, "down", 3, 2),
    ]

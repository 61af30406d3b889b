"""An agent's scaling policy (one per agent, in the organization's schema) and the decisions the
autoscaler took for it."""

from __future__ import annotations

from django.db import models
from django.utils import timezone

MAX_INSTANCES_CEILING = 100
MAX_WINDOW_MINUTES = 30
MAX_COOLDOWN_SECONDS = 86_400
# The metrics a policy may watch (autoscaler.rules reads them as `<name>_up`, `<name>_down`).
METRIC_NAMES = ("cpu", "memory", "queue", "response")


def _thresholds_pair(name: str) -> models.CheckConstraint:
    """Both thresholds of a metric set (scale down below `down`, up above `up`), or neither."""
    up, down = f"{name}_up", f"{name}_down"
    return models.CheckConstraint(
        condition=models.Q(**{f"{up}__isnull": True, f"{down}__isnull": True})
        | models.Q(**{f"{down}__gte": 0, f"{down}__lt": models.F(up)}),
        name=f"scaling_{name}_thresholds_valid",
    )


class ScalingPolicy(models.Model):
    """How the autoscaler treats one agent: bounds, thresholds per metric, window and cooldowns.

    A metric is watched when both its thresholds are set. Up: some watched metric at or above its
    `up` threshold in every minute of the window. Down: every watched metric at or below its
    `down` threshold in every minute of the window.
    """

    agent = models.OneToOneField(
        "agents.Agent", on_delete=models.CASCADE, related_name="scaling_policy"
    )
    is_enabled = models.BooleanField(default=False)
    min_instances = models.PositiveSmallIntegerField(default=1)
    max_instances = models.PositiveSmallIntegerField(default=5)
    window_minutes = models.PositiveSmallIntegerField(
        default=3, help_text="How many minutes in a row a threshold must hold."
    )
    scale_up_cooldown_seconds = models.PositiveIntegerField(default=180)
    scale_down_cooldown_seconds = models.PositiveIntegerField(default=600)
    cpu_up = models.FloatField(null=True, blank=True, default=75, help_text="CPU %.")
    cpu_down = models.FloatField(null=True, blank=True, default=25, help_text="CPU %.")
    memory_up = models.FloatField(
        null=True, blank=True, help_text="Memory, % of the instance's allocation."
    )
    memory_down = models.FloatField(
        null=True, blank=True, help_text="Memory, % of the instance's allocation."
    )
    queue_up = models.FloatField(
        null=True, blank=True, default=10, help_text="Tasks waiting, per instance."
    )
    queue_down = models.FloatField(
        null=True, blank=True, default=1, help_text="Tasks waiting, per instance."
    )
    response_up = models.FloatField(null=True, blank=True, help_text="Response time, ms.")
    response_down = models.FloatField(null=True, blank=True, help_text="Response time, ms.")
    updated_at = models.DateTimeField(default=timezone.now)
    updated_by = models.CharField(max_length=254, blank=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=models.Q(min_instances__gte=1)
                & models.Q(max_instances__gte=models.F("min_instances"))
                & models.Q(max_instances__lte=MAX_INSTANCES_CEILING),
                name="scaling_instances_bounds_valid",
            ),
            models.CheckConstraint(
                condition=models.Q(window_minutes__gte=1, window_minutes__lte=MAX_WINDOW_MINUTES),
                name="scaling_window_valid",
            ),
            models.CheckConstraint(
                condition=models.Q(scale_up_cooldown_seconds__lte=MAX_COOLDOWN_SECONDS)
                & models.Q(scale_down_cooldown_seconds__lte=MAX_COOLDOWN_SECONDS),
                name="scaling_cooldowns_valid",
            ),
            *(_thresholds_pair(name) for name in METRIC_NAMES),
        ]

    def __str__(self) -> str:
        return f"scaling of {self.agent_id}"


class Direction(models.TextChoices):
    UP = "up", "Up"
    DOWN = "down", "Down"


class ScalingDecision(models.Model):
    """One change the autoscaler wanted: from how many instances to how many, why, and what the
    pool let it do (`to_count` below `wanted_count` when the pool was full)."""

    agent = models.ForeignKey(
        "agents.Agent", on_delete=models.CASCADE, related_name="scaling_decisions"
    )
    decided_at = models.DateTimeField()
    direction = models.CharField(max_length=4, choices=Direction.choices)
    from_count = models.PositiveSmallIntegerField()
    wanted_count = models.PositiveSmallIntegerField()
    to_count = models.PositiveSmallIntegerField()
    reason = models.CharField(max_length=500)
    outcome = models.CharField(max_length=500)
    metrics = models.JSONField(default=dict, blank=True)
    decided_by = models.CharField(max_length=254, blank=True)

    class Meta:
        ordering = ["-decided_at", "-id"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(direction__in=Direction.values), name="scaling_direction_valid"
            ),
        ]
        indexes = [models.Index(fields=["agent", "-decided_at"], name="scaling_agent_time_idx")]

    def __str__(self) -> str:
        return f"{self.agent_id} {self.direction} {self.from_count}->{self.to_count}"

"""The portal's policy form: it parses what people type; autoscaler.services judges it."""

from __future__ import annotations

from typing import Any

from django import forms

from autoscaler.models import MAX_COOLDOWN_SECONDS, MAX_INSTANCES_CEILING, MAX_WINDOW_MINUTES
from autoscaler.services import MAX_THRESHOLD, POLICY_FIELDS

# (field prefix, label, unit) of each metric's pair of thresholds, in the order shown.
METRIC_ROWS = (
    ("cpu", "CPU", "%"),
    ("memory", "Memory", "% of allocation"),
    ("queue", "Queue depth", "tasks per instance"),
    ("response", "Response time", "ms"),
)


def _count(label: str, low: int, high: int, help_text: str = "") -> forms.IntegerField:
    return forms.IntegerField(label=label, min_value=low, max_value=high, help_text=help_text)


def _threshold(label: str) -> forms.FloatField:
    return forms.FloatField(
        label=label,
        required=False,
        min_value=0,
        max_value=MAX_THRESHOLD,
        widget=forms.NumberInput(attrs={"step": "any", "inputmode": "decimal"}),
    )


class PolicyForm(forms.Form):
    is_enabled = forms.BooleanField(label="Scale this agent automatically", required=False)
    min_instances = _count("Minimum instances", 1, MAX_INSTANCES_CEILING)
    max_instances = _count("Maximum instances", 1, MAX_INSTANCES_CEILING)
    window_minutes = _count(
        "Sustained for (minutes)", 1, MAX_WINDOW_MINUTES, "Every minute of it over a threshold."
    )
    scale_up_cooldown_seconds = _count(
        "Cooldown before scaling up (s)", 0, MAX_COOLDOWN_SECONDS, "After any change."
    )
    scale_down_cooldown_seconds = _count(
        "Cooldown before scaling down (s)", 0, MAX_COOLDOWN_SECONDS, "After any change."
    )
    cpu_up, cpu_down = _threshold("CPU: scale up at"), _threshold("CPU: scale down at")
    memory_up, memory_down = (
        _threshold("Memory: scale up at"),
        _threshold("Memory: scale down at"),
    )
    queue_up, queue_down = _threshold("Queue: scale up at"), _threshold("Queue: scale down at")
    response_up = _threshold("Response time: scale up at")
    response_down = _threshold("Response time: scale down at")

    @classmethod
    def initial_for(cls, policy: Any) -> dict[str, Any]:
        def shown(value: Any) -> Any:  # 75, not 75.0
            return int(value) if isinstance(value, float) and value.is_integer() else value

        return {name: shown(getattr(policy, name)) for name in POLICY_FIELDS}

    def metric_rows(self) -> list[dict[str, Any]]:
        return [
            {"label": label, "unit": unit, "up": self[f"{name}_up"], "down": self[f"{name}_down"]}
            for name, label, unit in METRIC_ROWS
        ]

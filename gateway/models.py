"""Metrics the agent runtimes report, one row per instance per minute (the latest sample)."""

from __future__ import annotations

from django.db import models


class InstanceMetric(models.Model):
    """The last sample an instance reported in one minute (UTC, truncated).

    Gauges (cpu, memory, queue depth, response time) are the latest reading; `tasks_done` is the
    runtime's running total, so a minute's throughput is the difference between two rows.
    """

    instance = models.ForeignKey(
        "agents.AgentInstance", on_delete=models.CASCADE, related_name="metrics"
    )
    agent_id = models.UUIDField()
    minute = models.DateTimeField()
    cpu_percent = models.FloatField()
    memory_mb = models.FloatField()
    queue_depth = models.PositiveIntegerField()
    response_ms = models.FloatField()
    tasks_done = models.PositiveBigIntegerField()
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["minute"]
        constraints = [
            models.UniqueConstraint(fields=["instance", "minute"], name="metric_instance_minute"),
        ]
        indexes = [models.Index(fields=["agent_id", "minute"], name="metric_agent_minute_idx")]

    def __str__(self) -> str:
        return f"{self.instance_id} @ {self.minute:%Y-%m-%d %H:%M}"

"""Custom tools, their saved versions and the organization's tool key-value store.

All of it lives in the organization's schema. A tool's code, input schema, limits and host API
permissions are versioned: every save that changes one of them adds a `ToolVersion` (numbered
1, 2, ...) and moves `Tool.version` to it; versions are never edited, so an agent pinned to
`name@3` always runs what version 3 was.
"""

from __future__ import annotations

import uuid

from django.db import models
from django.db.models.functions import Lower


class Tool(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=64)
    description = models.TextField(blank=True, max_length=2000)
    version = models.PositiveIntegerField(default=1, help_text="The current version's number.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    created_by = models.CharField(max_length=254, blank=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(Lower("name"), name="tool_name_unique_ci"),
            models.CheckConstraint(
                condition=models.Q(name__regex=r"^[a-z][a-z0-9_.-]{0,63}$"), name="tool_name_valid"
            ),
            models.CheckConstraint(condition=models.Q(version__gte=1), name="tool_version_gte_1"),
        ]

    def __str__(self) -> str:
        return self.name


class ToolVersion(models.Model):
    tool = models.ForeignKey(Tool, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()
    code = models.TextField()
    input_schema = models.JSONField(default=dict)
    timeout_ms = models.PositiveIntegerField()
    memory_mb = models.PositiveIntegerField()
    permissions = models.JSONField(default=list)
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.CharField(max_length=254, blank=True)

    class Meta:
        ordering = ["tool", "-number"]
        constraints = [
            models.UniqueConstraint(fields=["tool", "number"], name="tool_version_unique"),
            models.CheckConstraint(condition=models.Q(number__gte=1), name="tool_version_number"),
            models.CheckConstraint(condition=models.Q(timeout_ms__gt=0), name="tool_timeout_gt_0"),
            models.CheckConstraint(condition=models.Q(memory_mb__gt=0), name="tool_memory_gt_0"),
        ]

    def __str__(self) -> str:
        return f"{self.tool_id} v{self.number}"


class ToolValue(models.Model):
    """One key of the organization's tool key-value store (`kv.read` / `kv.write`)."""

    key = models.CharField(max_length=200, unique=True)
    value = models.JSONField()
    updated_at = models.DateTimeField(auto_now=True)
    updated_by = models.CharField(max_length=254, blank=True)

    class Meta:
        ordering = ["key"]

    def __str__(self) -> str:
        return self.key

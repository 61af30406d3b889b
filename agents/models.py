"""Agent definitions, their instances, the organization's resource pool and its config keys.

All of it lives in the organization's schema. The pool and the config state are single rows
(`pk=1`): the pool's counters change in one conditional UPDATE at the end of each allocation's
transaction (agents.services), config revisions under the state row's lock.
"""

from __future__ import annotations

import uuid

from django.db import models
from django.db.models.functions import Lower
from django.utils import timezone

from agents.configuration import AGENT_TYPE_PATTERN
from agents.resources import format_cpu, format_memory

SINGLETON_PK = 1


class InstanceStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    RUNNING = "running", "Running"
    STOPPING = "stopping", "Stopping"
    STOPPED = "stopped", "Stopped"
    FAILED = "failed", "Failed"


# Instances that hold resources from the pool. A stop frees them at once (see docs/agents.md).
ACTIVE_STATUSES = (InstanceStatus.PENDING, InstanceStatus.RUNNING)


class Agent(models.Model):
    """An agent definition: what it is, what each of its instances needs, what it may do."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=80)
    type = models.CharField(max_length=40)
    description = models.TextField(blank=True, max_length=2000)
    config = models.JSONField(default=dict, blank=True)
    cpu_millicores = models.PositiveIntegerField(help_text="Requested per instance.")
    memory_mb = models.PositiveIntegerField(help_text="Requested per instance, in MiB.")
    permissions = models.JSONField(default=list, blank=True)
    tools = models.JSONField(default=list, blank=True)
    # Names of the organization's secrets (vault) its runtimes receive when they attach.
    secrets = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    created_by = models.CharField(max_length=254, blank=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(Lower("name"), name="agent_name_unique_ci"),
            models.CheckConstraint(condition=models.Q(cpu_millicores__gt=0), name="agent_cpu_gt_0"),
            models.CheckConstraint(condition=models.Q(memory_mb__gt=0), name="agent_memory_gt_0"),
            models.CheckConstraint(
                condition=models.Q(type__regex=AGENT_TYPE_PATTERN) & ~models.Q(type="defaults"),
                name="agent_type_valid",
            ),
        ]
        indexes = [models.Index(fields=["type", "name"], name="agent_type_name_idx")]

    def __str__(self) -> str:
        return self.name

    @property
    def cpu(self) -> str:
        return format_cpu(self.cpu_millicores)

    @property
    def memory(self) -> str:
        return format_memory(self.memory_mb)


class AgentInstance(models.Model):
    """A running (or once running) copy of an agent, with the resources it was allocated."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="instances")
    status = models.CharField(
        max_length=16, choices=InstanceStatus.choices, default=InstanceStatus.PENDING
    )
    namespace = models.CharField(max_length=120)
    cpu_millicores = models.PositiveIntegerField()
    memory_mb = models.PositiveIntegerField()
    requested_by = models.CharField(max_length=254, blank=True)
    requested_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    last_heartbeat_at = models.DateTimeField(null=True, blank=True)
    stopped_at = models.DateTimeField(null=True, blank=True)
    # Its run is metered on the usage ledger up to here (agents.metering).
    metered_until = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-requested_at"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(status__in=InstanceStatus.values), name="instance_status_valid"
            )
        ]
        indexes = [
            models.Index(fields=["agent", "status"], name="instance_agent_status_idx"),
            models.Index(fields=["status"], name="instance_status_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.agent_id}/{self.id} ({self.status})"

    @property
    def is_active(self) -> bool:
        return self.status in ACTIVE_STATUSES

    @property
    def cpu(self) -> str:
        return format_cpu(self.cpu_millicores)

    @property
    def memory(self) -> str:
        return format_memory(self.memory_mb)


class ResourcePool(models.Model):
    """What the organization has allocated (one row per schema), changed by allocations as the
    last statement of their transactions.

    Messages are metered on billing's usage ledger (Redis, rolled up into PostgreSQL), not here.
    """

    id = models.PositiveSmallIntegerField(primary_key=True, default=SINGLETON_PK)
    agents = models.PositiveIntegerField(default=0)
    instances = models.PositiveIntegerField(default=0)
    cpu_millicores = models.PositiveBigIntegerField(default=0)
    memory_mb = models.PositiveBigIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=models.Q(id=SINGLETON_PK), name="pool_singleton")
        ]

    def __str__(self) -> str:
        return "resource pool"


class ConfigKey(models.Model):
    """One configuration key of the organization and its JSON value.

    `version` is the organization's config revision at this key's last write: versions only grow,
    across keys and deletions, so a consumer of `config.changed` can order what it receives.
    """

    key = models.CharField(max_length=200, unique=True)
    value = models.JSONField()
    version = models.PositiveBigIntegerField()
    updated_at = models.DateTimeField(auto_now=True)
    updated_by = models.CharField(max_length=254, blank=True)

    class Meta:
        ordering = ["key"]

    def __str__(self) -> str:
        return self.key


class ConfigState(models.Model):
    """The organization's config revision counter (one row), locked by every config write."""

    id = models.PositiveSmallIntegerField(primary_key=True, default=SINGLETON_PK)
    revision = models.PositiveBigIntegerField(default=0)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=models.Q(id=SINGLETON_PK), name="config_singleton")
        ]

    def __str__(self) -> str:
        return f"config revision {self.revision}"


class ConfigVersion(models.Model):
    """One saved value of one config key: its own version number (1, 2, 3 ... per key), the value
    (null: the key was deleted), and the organization's revision at that write. The history,
    diffs and rollback of the Config page read these; rows are only ever added."""

    key = models.CharField(max_length=200)
    number = models.PositiveIntegerField()
    value = models.JSONField(null=True, blank=True)
    revision = models.PositiveBigIntegerField()
    created_at = models.DateTimeField(default=timezone.now)
    created_by = models.CharField(max_length=254, blank=True)
    restored_from = models.PositiveIntegerField(
        null=True, blank=True, help_text="The version this one rolled back to, if it did."
    )

    class Meta:
        ordering = ["key", "-number"]
        constraints = [
            models.UniqueConstraint(fields=["key", "number"], name="config_version_unique"),
            models.CheckConstraint(
                condition=models.Q(number__gte=1), name="config_version_positive"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.key} v{self.number}"

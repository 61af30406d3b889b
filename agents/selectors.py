"""Reads about agents: definitions, instances, the pool and its limits, config resolution."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING, Any

from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Case, CharField, IntegerField, Max, QuerySet, Value, When
from django.db.models.expressions import RawSQL
from django.utils import timezone

from agents import config_cache, resources
from agents.configuration import (
    DEFAULTS_KEY,
    Resolution,
    agent_layers,
    resolve,
    type_key,
    validate_agent_type,
    validate_key,
)
from agents.models import (
    SINGLETON_PK,
    Agent,
    AgentInstance,
    ConfigKey,
    ConfigVersion,
    InstanceStatus,
    ResourcePool,
)
from billing import selectors as billing_selectors
from core.actors import Actor
from core.agent_permissions import granted
from tenants import context, routing

if TYPE_CHECKING:
    from tenants.models import Tenant

# Limits a plan sets and staff may override per organization (`Tenant.<name>_override`).
LIMIT_NAMES = (
    "max_agents",
    "max_instances",
    "max_cpu_millicores",
    "max_memory_mb",
    "max_instance_cpu_millicores",
    "max_instance_memory_mb",
    "messages_per_month",
)

# An agent's status, derived from its instances (the list filters on it).
AGENT_STATUSES = ("running", "pending", "stopping", "idle")


def _require(actor: Actor, permission: str) -> None:
    if not actor.can(permission):
        raise PermissionDenied(f"This needs the “{permission}” permission.")


# --- Limits and the pool ---------------------------------------------------------------------


@dataclass(frozen=True)
class Limits:
    max_agents: int
    max_instances: int
    max_cpu_millicores: int
    max_memory_mb: int
    max_instance_cpu_millicores: int
    max_instance_memory_mb: int
    messages_per_month: int
    allowed_agent_permissions: frozenset[str]
    overridden: frozenset[str]


def limits_of(tenant: Tenant) -> Limits:
    """The limits of a tenant row loaded with its plan: the plan's, unless staff overrode them."""
    plan = tenant.plan
    values: dict[str, int] = {}
    overridden = set()
    for name in LIMIT_NAMES:
        override = getattr(tenant, f"{name}_override", None)
        values[name] = getattr(plan, name) if override is None else override
        if override is not None:
            overridden.add(name)
    return Limits(
        **values,
        allowed_agent_permissions=frozenset(plan.allowed_agent_permissions or []),
        overridden=frozenset(overridden),
    )


def limits_get(*, tenant: Tenant | None = None) -> Limits:
    """The current limits of `tenant` (default: the current one), from the routing cache.

    The cache (tenants.routing) is dropped in every process when a plan or a staff override
    changes (`clear_everywhere` after commit), so the change applies to the next allocation; it
    saves every request switching to `public` and back.
    """
    tenant = tenant or context.require_tenant()
    row = routing.tenant_row(tenant.pk)
    # Kept on the cached row: a new row (the cache dropped or expired) computes them again.
    limits = row.__dict__.get("_cached_limits")
    if limits is None:
        limits = row._cached_limits = limits_of(row)
    return limits


@dataclass(frozen=True)
class Meter:
    name: str
    label: str
    used: int
    limit: int
    used_display: str
    limit_display: str

    @property
    def percent(self) -> int:
        if self.limit <= 0:
            return 100 if self.used else 0
        return min(100, round(self.used * 100 / self.limit))

    @property
    def is_over(self) -> bool:
        return self.used > self.limit

    @property
    def is_full(self) -> bool:
        return self.used >= self.limit


@dataclass(frozen=True)
class PoolUsage:
    limits: Limits
    agents: int
    instances: int
    cpu_millicores: int
    memory_mb: int
    messages_this_month: int

    @property
    def meters(self) -> list[Meter]:
        limits = self.limits
        return [
            Meter(
                "agents",
                "Agents",
                self.agents,
                limits.max_agents,
                str(self.agents),
                str(limits.max_agents),
            ),
            Meter(
                "instances",
                "Instances",
                self.instances,
                limits.max_instances,
                str(self.instances),
                str(limits.max_instances),
            ),
            Meter(
                "cpu",
                "CPU cores",
                self.cpu_millicores,
                limits.max_cpu_millicores,
                resources.format_cores(self.cpu_millicores),
                resources.format_cores(limits.max_cpu_millicores),
            ),
            Meter(
                "memory",
                "Memory",
                self.memory_mb,
                limits.max_memory_mb,
                resources.format_memory(self.memory_mb) if self.memory_mb else "0",
                resources.format_memory(limits.max_memory_mb),
            ),
            Meter(
                "messages",
                "Messages this month",
                self.messages_this_month,
                limits.messages_per_month,
                f"{self.messages_this_month:,}",
                f"{limits.messages_per_month:,}",
            ),
        ]


def current_month() -> date:
    return timezone.now().date().replace(day=1)


def pool_row() -> ResourcePool:
    # The row is created by a migration in every schema; get_or_create covers a schema built
    # before it (and costs nothing once the row exists).
    return ResourcePool.objects.get_or_create(pk=SINGLETON_PK)[0]


def pool_get(*, actor: Actor, limits: Limits | None = None) -> PoolUsage:
    """The organization's pool: what is allocated, beside its limits."""
    _require(actor, "agents:read")
    limits = limits or limits_get()
    pool = pool_row()
    # The month's messages come from the usage ledger (billing), the numbers the quota enforces.
    tenant = context.require_tenant()
    now = timezone.now()
    start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    messages = billing_selectors.meter_total(
        tenant=tenant, meter="gateway_messages", start=start, end=now
    )
    return PoolUsage(
        limits=limits,
        agents=pool.agents,
        instances=pool.instances,
        cpu_millicores=pool.cpu_millicores,
        memory_mb=pool.memory_mb,
        messages_this_month=messages,
    )


# --- Agents and instances --------------------------------------------------------------------


# An agent's status and active instance count, from its pending, running and stopping
# instances only: each is a probe of the (agent, status) index, so an agent's stopped history
# (any length) is never read. Raw SQL because the ORM's equivalent (three correlated counts and
# a CASE) cost more to compile than the query takes to run; the table is the queryset's own
# (`agents_agent`, never aliased: these querysets are not nested in others).
_ACTIVE_INSTANCES_SQL = (
    "(SELECT count(*) FROM agents_agentinstance AS i"
    " WHERE i.agent_id = agents_agent.id AND i.status IN (%s, %s))"
)
_STATUS_SQL = (
    "CASE"
    " WHEN EXISTS (SELECT 1 FROM agents_agentinstance AS i"
    "  WHERE i.agent_id = agents_agent.id AND i.status = %s) THEN 'running'"
    " WHEN EXISTS (SELECT 1 FROM agents_agentinstance AS i"
    "  WHERE i.agent_id = agents_agent.id AND i.status = %s) THEN 'pending'"
    " WHEN EXISTS (SELECT 1 FROM agents_agentinstance AS i"
    "  WHERE i.agent_id = agents_agent.id AND i.status = %s) THEN 'stopping'"
    " ELSE 'idle' END"
)


def _with_status(queryset: QuerySet[Agent]) -> QuerySet[Agent]:
    """`status` (AGENT_STATUSES) and `active_instances` (pending + running) on each agent."""
    return queryset.annotate(
        active_instances=RawSQL(  # noqa: S611 # nosec B611 (constant SQL, values as parameters)
            _ACTIVE_INSTANCES_SQL,
            (InstanceStatus.PENDING.value, InstanceStatus.RUNNING.value),
            output_field=IntegerField(),
        ),
        status=RawSQL(  # noqa: S611 # nosec B611 (constant SQL, values as parameters)
            _STATUS_SQL,
            (
                InstanceStatus.RUNNING.value,
                InstanceStatus.PENDING.value,
                InstanceStatus.STOPPING.value,
            ),
            output_field=CharField(),
        ),
    )


def agent_list(
    *,
    actor: Actor,
    agent_type: str | None = None,
    status: str | None = None,
    search: str | None = None,
) -> QuerySet[Agent]:
    """Agents, by name, with their derived `status` and instance counts; filtered if asked.

    Unknown filter values are a ValidationError (the API answers 400).
    """
    _require(actor, "agents:read")
    queryset = _with_status(Agent.objects.all())
    if agent_type:
        queryset = queryset.filter(type=validate_agent_type(agent_type))
    if status:
        if status not in AGENT_STATUSES:
            raise ValidationError(
                {"status": [f"Unknown status; use one of {', '.join(AGENT_STATUSES)}."]}
            )
        queryset = queryset.filter(status=status)
    if search:
        # PostgreSQL refuses NUL in text: a search for one finds what it would without it.
        queryset = queryset.filter(name__icontains=search.replace("\x00", "").strip()[:80])
    return queryset.order_by("name", "id")


def agent_types(*, actor: Actor) -> list[str]:
    """The types in use, for filters."""
    _require(actor, "agents:read")
    return list(Agent.objects.order_by("type").values_list("type", flat=True).distinct())


def as_uuid(value: Any) -> uuid.UUID | None:
    try:
        return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))
    except (TypeError, ValueError):
        return None


def agent_get(*, actor: Actor, agent_id: Any) -> Agent:
    """One agent of this organization; Agent.DoesNotExist for a bad id, a missing one, or one
    that belongs to another organization (it is not in this schema)."""
    _require(actor, "agents:read")
    pk = as_uuid(agent_id)
    if pk is None:
        raise Agent.DoesNotExist
    return _with_status(Agent.objects.filter(pk=pk)).get()


def instance_list(*, actor: Actor, agent: Agent) -> QuerySet[AgentInstance]:
    """The agent's instances, active ones first, newest first."""
    _require(actor, "agents:read")
    active_first = Case(
        When(status__in=[InstanceStatus.PENDING, InstanceStatus.RUNNING], then=Value(0)),
        When(status=InstanceStatus.STOPPING, then=Value(1)),
        default=Value(2),
    )
    return AgentInstance.objects.filter(agent=agent).order_by(active_first, "-requested_at")


def instance_ever_started(*, actor: Actor) -> bool:
    """Whether a runtime has ever attached to an instance of the organization (onboarding)."""
    _require(actor, "org:read")
    return AgentInstance.objects.filter(started_at__isnull=False).exists()


def instance_get(*, actor: Actor, agent: Agent, instance_id: Any) -> AgentInstance:
    _require(actor, "agents:read")
    pk = as_uuid(instance_id)
    if pk is None:
        raise AgentInstance.DoesNotExist
    return AgentInstance.objects.get(agent=agent, pk=pk)


def granted_permissions(*, agent: Agent, limits: Limits) -> list[str]:
    """What the agent gets: the permissions it asked for that the current plan allows."""
    return granted(agent.permissions, allowed=limits.allowed_agent_permissions)


# --- Config ----------------------------------------------------------------------------------


def config_list(*, actor: Actor) -> QuerySet[ConfigKey]:
    _require(actor, "config:read")
    return ConfigKey.objects.order_by("key")


def config_key_versions(*, actor: Actor, keys: list[str]) -> dict[str, int]:
    """Each key's latest version number (its own count of writes), in one query."""
    _require(actor, "config:read")
    rows = (
        ConfigVersion.objects.filter(key__in=keys)
        .values("key")
        .annotate(latest=Max("number"))
        .values_list("key", "latest")
    )
    return dict(rows)


def config_history(*, actor: Actor, key: str) -> list[ConfigVersion]:
    """Every version of `key`, newest first (deletions included, value None); [] for a string
    that is not a key."""
    _require(actor, "config:read")
    try:
        validate_key(key)
    except ValidationError:
        return []
    return list(ConfigVersion.objects.filter(key=key).order_by("-number")[:200])


def config_get(*, actor: Actor, key: str) -> ConfigKey:
    """The key; ConfigKey.DoesNotExist if missing (or not a key at all)."""
    _require(actor, "config:read")
    try:
        validate_key(key)
    except ValidationError as error:
        raise ConfigKey.DoesNotExist from error
    return ConfigKey.objects.get(key=key)


def _load_organization(keys: list[str]) -> dict[str, Any]:
    return dict(ConfigKey.objects.filter(key__in=keys).values_list("key", "value"))


def _load_platform(keys: list[str]) -> dict[str, Any]:
    from tenants.models import PlatformConfigDefault

    with context.public_context():
        return dict(PlatformConfigDefault.objects.filter(key__in=keys).values_list("key", "value"))


def config_values(
    *, keys: list[str], use_cache: bool = True
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(platform defaults, organization values) of `keys`, cached per organization.

    The organization's namespace in the cache is its public id: two organizations never share an
    entry, whatever their keys.
    """
    tenant_id = str(context.require_tenant().public_id)

    def load(namespace: str, wanted: list[str]) -> dict[str, Any]:
        return (
            _load_platform(wanted)
            if namespace == config_cache.PLATFORM
            else (_load_organization(wanted))
        )

    if not use_cache:
        return _load_platform(keys), _load_organization(keys)
    values = config_cache.read({config_cache.PLATFORM: keys, tenant_id: keys}, load)
    return values[config_cache.PLATFORM], values[tenant_id]


def config_resolve(
    *,
    actor: Actor,
    agent_type: str,
    definition: dict[str, Any] | None = None,
    use_cache: bool = True,
) -> Resolution:
    """The effective configuration of an agent type (and of a definition, if given).

    Layers, lowest first: platform `agents.defaults` < platform `agents.<type>` < organization
    `agents.defaults` < organization `agents.<type>` < the definition's config. Objects merge
    deeply; lists and scalars replace (agents.configuration.deep_merge).
    """
    _require(actor, "config:read" if definition is None else "agents:read")
    keys = [DEFAULTS_KEY, type_key(agent_type)]
    platform, organization = config_values(keys=keys, use_cache=use_cache)
    return resolve(
        agent_layers(
            agent_type=agent_type,
            platform=platform,
            organization=organization,
            definition=definition,
        )
    )

"""Every write to agents: definitions, instances against the pool's limits, config keys, limits.

Each function takes the acting principal first, checks its permission (a refusal is recorded
and raises PermissionDenied, changing nothing), validates everything before writing, writes in
one transaction, and announces the change with `audit.services.emit` (the audit event in the
transaction, the real-time event after commit).

Allocation: every change of the organization's pool counters is one conditional UPDATE
(`_pool_change`: add, if every limit still holds after it), the last statement of its
transaction. The row's lock is then held for the commit only, concurrent writers of one
organization do the rest of their work side by side, and PostgreSQL re-checks the condition on
the row a concurrent writer committed, so the pool can never over-allocate. Only a refusal reads
the row (locked) to say which limit was hit.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Any

from django.core.exceptions import ValidationError
from django.db import DEFAULT_DB_ALIAS, DatabaseError, IntegrityError, transaction
from django.utils import timezone

from agents import config_cache, metering, selectors
from agents.configuration import (
    encoded_size,
    validate_agent_type,
    validate_entry,
    validate_key,
    validate_value,
)
from agents.models import (
    ACTIVE_STATUSES,
    SINGLETON_PK,
    Agent,
    AgentInstance,
    ConfigKey,
    ConfigState,
    ConfigVersion,
    InstanceStatus,
    ResourcePool,
)
from agents.resources import format_cpu, format_memory, parse_cpu, parse_memory
from agents.selectors import LIMIT_NAMES, Limits
from audit import services as audit
from audit.models import Result
from core import sql
from core.actors import Actor
from core.agent_permissions import validate_permissions, validate_tools
from core.errors import QuotaExceeded, field_error
from tenants import context, events, routing
from vault import services as vault_services

if TYPE_CHECKING:
    from tenants.models import Tenant

AGENT_FIELDS = (
    "name",
    "type",
    "description",
    "config",
    "cpu",
    "memory",
    "permissions",
    "tools",
    "secrets",
)
MAX_NAME_LENGTH = 80
MAX_DESCRIPTION_LENGTH = 2000


# audit.AuditEvent.resource_id's length: a refused call may name something longer.
AUDIT_RESOURCE_ID_LENGTH = 128


def same_json(a: Any, b: Any) -> bool:
    """Equal as JSON: Python's == takes `true` for `1` and `1.0` for `1`; JSON does not."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def _refuse_quota(actor: Actor, action: str, resource_id: Any, error: QuotaExceeded) -> None:
    """Record a quota refusal after the transaction rolled back, then re-raise it."""
    audit.record(
        actor=actor,
        action=action,
        resource_type="agent",
        resource_id=str(resource_id or ""),
        result=Result.DENIED,
        details={"reason": error.code, **error.detail},
    )
    raise error


def _locked_pool() -> ResourcePool:
    try:
        return ResourcePool.objects.select_for_update().get(pk=SINGLETON_PK)
    except ResourcePool.DoesNotExist:
        # The migration creates the row in every schema; this covers one built before it.
        selectors.pool_row()
        return ResourcePool.objects.select_for_update().get(pk=SINGLETON_PK)


# The pool's counters, and the one statement that changes them: each counter checked against its
# limit unless that limit is NULL.
POOL_COUNTERS = ("agents", "instances", "cpu_millicores", "memory_mb")
_POOL_CHANGE = """
UPDATE agents_resourcepool SET
  agents = agents + %(agents)s,
  instances = instances + %(instances)s,
  cpu_millicores = cpu_millicores + %(cpu_millicores)s,
  memory_mb = memory_mb + %(memory_mb)s,
  updated_at = %(now)s
WHERE id = %(id)s
  AND agents + %(agents)s <= coalesce(%(max_agents)s, agents + %(agents)s)
  AND instances + %(instances)s <= coalesce(%(max_instances)s, instances + %(instances)s)
  AND cpu_millicores + %(cpu_millicores)s
      <= coalesce(%(max_cpu_millicores)s, cpu_millicores + %(cpu_millicores)s)
  AND memory_mb + %(memory_mb)s <= coalesce(%(max_memory_mb)s, memory_mb + %(memory_mb)s)
"""


def _pool_change(
    delta: dict[str, int], *, within: dict[str, int] | None = None, last: Any = None
) -> bool:
    """Add `delta` to the pool's counters if each counter named in `within` stays at or under
    its limit there; True when it did. One conditional UPDATE, no read.

    Callers make it the last statement of their transaction: the UPDATE takes the pool row's
    lock, which is then held for the commit only, never across the rest of the work. Exact under
    races: an UPDATE of a row another transaction changed waits for it, then evaluates the
    condition again on the committed row (PostgreSQL's READ COMMITTED re-check). With `last`
    (core.sql.atomic's), the UPDATE goes out with the COMMIT: the lock is held for PostgreSQL's
    time only, and a change that does not fit raises core.sql.Refused, nothing committed.
    """
    within = within or {}
    parameters: dict[str, Any] = {"now": timezone.now(), "id": SINGLETON_PK}
    for name in POOL_COUNTERS:
        parameters[name] = delta.get(name, 0)
        parameters[f"max_{name}"] = within.get(name)
    if last is not None:
        return last(_POOL_CHANGE, parameters, required=bool(within))
    with sql.cursor() as cursor:
        cursor.execute(_POOL_CHANGE, parameters)
        return cursor.rowcount == 1


def _freed(instances: list[AgentInstance]) -> dict[str, int]:
    """The pool change that returns what `instances` held."""
    return {
        "instances": -len(instances),
        "cpu_millicores": -sum(instance.cpu_millicores for instance in instances),
        "memory_mb": -sum(instance.memory_mb for instance in instances),
    }


def _merge_errors(errors: dict[str, list[ValidationError]], error: ValidationError) -> None:
    for field, messages in error.error_dict.items():
        errors.setdefault(field, []).extend(messages)


# --- Agent definitions -----------------------------------------------------------------------


def _clean_agent(data: dict[str, Any], limits: Limits, *, partial: bool) -> dict[str, Any]:
    """Validate the given fields (all of them unless `partial`); every field's errors at once."""
    unknown = sorted(set(data) - set(AGENT_FIELDS))
    if unknown:
        raise ValidationError({name: ["Unknown field."] for name in unknown})
    errors: dict[str, list[ValidationError]] = {}
    cleaned: dict[str, Any] = {}

    def check(name: str, clean) -> None:
        if name not in data:
            if not partial and name in {"name", "type", "cpu", "memory"}:
                errors[name] = [ValidationError("This field is required.", code="required")]
            return
        try:
            cleaned[name] = clean(data[name])
        except ValidationError as error:
            _merge_errors(errors, error)

    def clean_name(value: Any) -> str:
        if not isinstance(value, str) or not value.strip():
            raise field_error("name", "Enter a name.", "required")
        if len(value.strip()) > MAX_NAME_LENGTH:
            raise field_error("name", f"At most {MAX_NAME_LENGTH} characters.", "max_length")
        return value.strip()

    def clean_description(value: Any) -> str:
        value = "" if value is None else value
        if not isinstance(value, str):
            raise field_error("description", "Must be text.", "invalid")
        if len(value) > MAX_DESCRIPTION_LENGTH:
            raise field_error(
                "description", f"At most {MAX_DESCRIPTION_LENGTH} characters.", "max_length"
            )
        return value.strip()

    def clean_config(value: Any) -> dict[str, Any]:
        return validate_value(
            {} if value is None else value, field_name="config", require_object=True
        )

    check("name", clean_name)
    check("type", validate_agent_type)
    check("description", clean_description)
    check("config", clean_config)
    check("cpu", lambda v: parse_cpu(v, maximum=limits.max_instance_cpu_millicores))
    check("memory", lambda v: parse_memory(v, maximum=limits.max_instance_memory_mb))
    check(
        "permissions",
        lambda v: validate_permissions(v, allowed=limits.allowed_agent_permissions),
    )
    check("tools", validate_tools)
    check("secrets", vault_services.validate_secret_references)
    if errors:
        raise ValidationError(errors)
    columns = {"cpu": "cpu_millicores", "memory": "memory_mb"}
    return {columns.get(name, name): value for name, value in cleaned.items()}


def agent_validate(*, data: dict[str, Any], partial: bool = False) -> None:
    """Check agent fields without writing (forms show every error at once); ValidationError."""
    _clean_agent(data, selectors.limits_get(), partial=partial)


def _name_taken(name: str, *, exclude: Any = None) -> bool:
    queryset = Agent.objects.filter(name__iexact=name)
    if exclude is not None:
        queryset = queryset.exclude(pk=exclude)
    return queryset.exists()


NAME_TAKEN = "An agent with this name already exists."


def agent_payload(agent: Agent) -> dict[str, Any]:
    """The agent as its events carry it (the config is left out: it can be 64 KB)."""
    return {
        "id": str(agent.id),
        "name": agent.name,
        "type": agent.type,
        "cpu": format_cpu(agent.cpu_millicores),
        "memory": format_memory(agent.memory_mb),
        "permissions": list(agent.permissions),
        "tools": list(agent.tools),
    }


def agent_create(*, actor: Actor, **data: Any) -> Agent:
    """Create an agent definition; 409 `agent_limit_reached` when the plan's count is used up.

    Fields: name, type, description, config (object), cpu (`0.5`, `500m`), memory (`512MB`),
    permissions (filtered against the plan), tools.
    """
    audit.require(actor, "agents:write", action="agent.created", resource_type="agent")
    limits = selectors.limits_get()
    cleaned = _clean_agent(data, limits, partial=False)
    try:
        with transaction.atomic():
            if _name_taken(cleaned["name"]):
                raise field_error("name", NAME_TAKEN, "name_taken")
            agent = Agent.objects.create(**cleaned, created_by=actor.label)
            audit.emit(
                actor=actor,
                action="agent.created",
                resource_type="agent",
                resource_id=agent.pk,
                details={
                    **agent_payload(agent),
                    "config_bytes": encoded_size(agent.config),
                },
                data=agent_payload(agent),
            )
            # Last: the pool row is locked for the commit only.
            if not _pool_change({"agents": 1}, within={"agents": limits.max_agents}):
                pool = _locked_pool()
                if pool.agents + 1 > limits.max_agents:
                    raise QuotaExceeded(
                        "agent_limit_reached",
                        f"The organization has {pool.agents} of {limits.max_agents} agents.",
                        limit="max_agents",
                        allowed=limits.max_agents,
                        in_use=pool.agents,
                    )
                _pool_change({"agents": 1})  # room came back since: add under the lock
    except QuotaExceeded as error:
        _refuse_quota(actor, "agent.created", "", error)
    except IntegrityError as error:  # a concurrent create of the same name won
        raise field_error("name", NAME_TAKEN, "name_taken") from error
    return agent


def agent_update(*, actor: Actor, agent_id: Any, **data: Any) -> Agent:
    """Change the given fields of an agent. Running instances keep what they were allocated;
    new requests use the new resources."""
    audit.require(
        actor, "agents:write", action="agent.updated", resource_type="agent", resource_id=agent_id
    )
    limits = selectors.limits_get()
    cleaned = _clean_agent(data, limits, partial=True)
    pk = selectors.as_uuid(agent_id)
    try:
        with transaction.atomic():
            agent = Agent.objects.select_for_update().filter(pk=pk).first() if pk else None
            if agent is None:
                raise Agent.DoesNotExist
            if "name" in cleaned and _name_taken(cleaned["name"], exclude=agent.pk):
                raise field_error("name", NAME_TAKEN, "name_taken")
            changes: dict[str, Any] = {}
            for field, value in cleaned.items():
                before = getattr(agent, field)
                if same_json(before, value):
                    continue
                # Config can be large: the audit log says it changed, not what it holds.
                changes[field] = (
                    {"bytes": encoded_size(value)}
                    if field == "config"
                    else {"from": before, "to": value}
                )
                setattr(agent, field, value)
            if not changes:
                return agent
            agent.save(update_fields=[*changes, "updated_at"])
            audit.emit(
                actor=actor,
                action="agent.updated",
                resource_type="agent",
                resource_id=agent.pk,
                details={"name": agent.name, "changes": changes},
                data={**agent_payload(agent), "changed": sorted(changes)},
            )
    except IntegrityError as error:
        raise field_error("name", NAME_TAKEN, "name_taken") from error
    return agent


def agent_delete(*, actor: Actor, agent_id: Any) -> None:
    """Delete an agent and its instances; active instances are stopped and their resources
    return to the pool."""
    audit.require(
        actor, "agents:write", action="agent.deleted", resource_type="agent", resource_id=agent_id
    )
    pk = selectors.as_uuid(agent_id)
    with transaction.atomic():
        agent = Agent.objects.select_for_update().filter(pk=pk).first() if pk else None
        if agent is None:
            raise Agent.DoesNotExist
        active = list(
            AgentInstance.objects.select_for_update().filter(
                agent=agent, status__in=ACTIVE_STATUSES
            )
        )
        now = timezone.now()
        for instance in active:
            _end(instance, InstanceStatus.STOPPED, now)
            _announce_stop(actor, instance, reason="agent_deleted")
        payload = agent_payload(agent)
        agent.delete()
        audit.emit(
            actor=actor,
            action="agent.deleted",
            resource_type="agent",
            resource_id=pk,
            details={"name": payload["name"], "stopped_instances": len(active)},
            data={**payload, "stopped_instances": len(active)},
        )
        # Last, as every pool change: the row is locked for the commit only.
        _pool_change({"agents": -1, **_freed(active)})


# --- Instances -------------------------------------------------------------------------------


def instance_payload(instance: AgentInstance) -> dict[str, Any]:
    return {
        "id": str(instance.id),
        "agent_id": str(instance.agent_id),
        "namespace": instance.namespace,
        "status": instance.status,
        "cpu": format_cpu(instance.cpu_millicores),
        "memory": format_memory(instance.memory_mb),
    }


# The statements of an instance's start and stop, sent prepared (core.sql). They name the
# model's columns in its field order (a test holds them equal to the model).
_AGENT_SIZE = "SELECT name, cpu_millicores, memory_mb FROM agents_agent WHERE id = %s"
_AGENT_SIZE_FIELDS = ("id", "name", "cpu_millicores", "memory_mb")
_INSTANCE_COLUMNS = (
    "id",
    "agent_id",
    "status",
    "namespace",
    "cpu_millicores",
    "memory_mb",
    "requested_by",
    "requested_at",
    "started_at",
    "last_heartbeat_at",
    "stopped_at",
    "metered_until",
)
_INSERT_INSTANCE = (
    "INSERT INTO agents_agentinstance (id, agent_id, status, namespace, cpu_millicores,"
    " memory_mb, requested_by, requested_at, started_at, last_heartbeat_at, stopped_at,"
    " metered_until) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, NULL, NULL, NULL, NULL)"
)
_LOCK_INSTANCE = (
    "SELECT id, agent_id, status, namespace, cpu_millicores, memory_mb, requested_by,"
    " requested_at, started_at, last_heartbeat_at, stopped_at, metered_until"
    " FROM agents_agentinstance WHERE agent_id = %s AND id = %s FOR UPDATE"
)
_END_INSTANCE = (
    "UPDATE agents_agentinstance SET status = %s, stopped_at = %s, metered_until = %s WHERE id = %s"
)


def _check_room(pool: ResourcePool, limits: Limits, agent: Agent) -> None:
    """Every limit, against the locked pool: the first one that does not fit is refused."""
    if pool.agents > limits.max_agents:
        # A downgrade below the agents in use: nothing new runs until usage fits again.
        raise QuotaExceeded(
            "agent_limit_reached",
            f"The organization has {pool.agents} agents; its plan allows {limits.max_agents}. "
            "Delete agents to start instances again.",
            limit="max_agents",
            allowed=limits.max_agents,
            in_use=pool.agents,
        )
    if pool.instances + 1 > limits.max_instances:
        raise QuotaExceeded(
            "instance_limit_reached",
            f"{pool.instances} of {limits.max_instances} instances are in use.",
            limit="max_instances",
            allowed=limits.max_instances,
            in_use=pool.instances,
        )
    if agent.cpu_millicores > limits.max_instance_cpu_millicores:
        raise QuotaExceeded(
            "instance_too_large",
            f"This agent asks for {format_cpu(agent.cpu_millicores)} CPU per instance; the plan "
            f"allows {format_cpu(limits.max_instance_cpu_millicores)}.",
            limit="max_instance_cpu_millicores",
            allowed=limits.max_instance_cpu_millicores,
            requested=agent.cpu_millicores,
        )
    if agent.memory_mb > limits.max_instance_memory_mb:
        raise QuotaExceeded(
            "instance_too_large",
            f"This agent asks for {format_memory(agent.memory_mb)} per instance; the plan "
            f"allows {format_memory(limits.max_instance_memory_mb)}.",
            limit="max_instance_memory_mb",
            allowed=limits.max_instance_memory_mb,
            requested=agent.memory_mb,
        )
    if pool.cpu_millicores + agent.cpu_millicores > limits.max_cpu_millicores:
        free = max(0, limits.max_cpu_millicores - pool.cpu_millicores)
        raise QuotaExceeded(
            "insufficient_cpu",
            f"Not enough CPU: {format_cpu(agent.cpu_millicores)} requested, "
            f"{format_cpu(free) if free else '0'} free of {format_cpu(limits.max_cpu_millicores)}.",
            limit="max_cpu_millicores",
            allowed=limits.max_cpu_millicores,
            in_use=pool.cpu_millicores,
            requested=agent.cpu_millicores,
        )
    if pool.memory_mb + agent.memory_mb > limits.max_memory_mb:
        free = max(0, limits.max_memory_mb - pool.memory_mb)
        raise QuotaExceeded(
            "insufficient_memory",
            f"Not enough memory: {format_memory(agent.memory_mb)} requested, "
            f"{format_memory(free) if free else '0'} free of "
            f"{format_memory(limits.max_memory_mb)}.",
            limit="max_memory_mb",
            allowed=limits.max_memory_mb,
            in_use=pool.memory_mb,
            requested=agent.memory_mb,
        )


def instance_room(*, pool: Any, agent: Agent) -> str | None:
    """Why a new instance of `agent` would be refused now (the message), or None when it fits.

    A read for pages (the Start button follows the pool): `pool` is a selectors.PoolUsage. The
    rule is `_check_room`'s, the one instance_request enforces under the pool's lock.
    """
    try:
        _check_room(pool, pool.limits, agent)
    except QuotaExceeded as error:
        return error.message
    return None


def instance_namespace(agent_id: Any) -> str:
    """The instance's Channels namespace: `tenant.<tenant_id>.agents.<agent_id>`."""
    return events.group_name(str(context.require_tenant().public_id), f"agents.{agent_id}")


def _allocate(limits: Limits, agent: Agent, last: Any = None) -> None:
    """Add one instance of `agent` to the pool if every limit allows it (the transaction's last
    statement); otherwise raise QuotaExceeded naming the first limit that does not fit. With
    `last` the UPDATE goes with the COMMIT and a refusal raises core.sql.Refused instead (the
    caller tries again without it, to name the limit)."""
    fits_one = (
        agent.cpu_millicores <= limits.max_instance_cpu_millicores
        and agent.memory_mb <= limits.max_instance_memory_mb
    )
    delta = {"instances": 1, "cpu_millicores": agent.cpu_millicores, "memory_mb": agent.memory_mb}
    within = {
        "agents": limits.max_agents,
        "instances": limits.max_instances,
        "cpu_millicores": limits.max_cpu_millicores,
        "memory_mb": limits.max_memory_mb,
    }
    if fits_one and _pool_change(delta, within=within, last=last):
        return
    # Refused (or the row is missing): lock the row to say which limit, as _check_room orders
    # them. If room came back since the UPDATE, the allocation goes through under the lock.
    _check_room(_locked_pool(), limits, agent)
    _pool_change(delta)


def instance_request(*, actor: Actor, agent_id: Any) -> AgentInstance:
    """Start an instance of an agent, if the pool has room for it.

    The instance and its audit event are written first; the allocation is the transaction's
    last statement, one UPDATE of the pool's counters that checks every limit (`_allocate`), so
    concurrent requests hold the pool row only while they commit and never over-allocate. In an
    outermost transaction that UPDATE travels with the COMMIT (core.sql.atomic); if it finds no
    room, nothing was committed and the request runs again the long way, which locks the pool to
    name the limit (or goes through, if room came back meanwhile).
    Raises QuotaExceeded (409) naming the limit; the instance then rolls back.
    """
    audit.require(
        actor,
        "agents:write",
        action="instance.requested",
        resource_type="agent",
        resource_id=agent_id,
    )
    limits = selectors.limits_get()
    pk = selectors.as_uuid(agent_id)
    try:
        try:
            return _start(actor, pk, limits, with_commit=True)
        except sql.Refused:
            return _start(actor, pk, limits, with_commit=False)
    except QuotaExceeded as error:
        _refuse_quota(actor, "instance.requested", agent_id, error)


def _start(
    actor: Actor, pk: uuid.UUID | None, limits: Limits, *, with_commit: bool
) -> AgentInstance:
    with sql.atomic() as last:
        with sql.cursor() as cursor:
            if pk:
                cursor.execute(_AGENT_SIZE, [pk])
                row = cursor.fetchone()
            if not pk or row is None:
                raise Agent.DoesNotExist
            agent = Agent.from_db(DEFAULT_DB_ALIAS, _AGENT_SIZE_FIELDS, [pk, *row])
            # The row as AgentInstance.save() would insert it (`requested_at` its auto_now_add).
            values = [
                uuid.uuid4(),
                pk,
                InstanceStatus.PENDING,
                instance_namespace(pk),
                agent.cpu_millicores,
                agent.memory_mb,
                actor.label,
                timezone.now(),
                None,
                None,
                None,
                None,
            ]
            cursor.execute(_INSERT_INSTANCE, [*values[:2], str(values[2]), *values[3:8]])
        instance = AgentInstance.from_db(DEFAULT_DB_ALIAS, None, values)
        AgentInstance.agent.field.set_cached_value(instance, agent)
        payload = instance_payload(instance)
        audit.emit(
            actor=actor,
            action="instance.requested",
            resource_type="instance",
            resource_id=instance.pk,
            details={"agent": agent.name, **payload},
            data=payload,
        )
        _allocate(limits, agent, last if with_commit else None)
    return instance


def _end(instance: AgentInstance, status: str, now: datetime) -> None:
    """Take an active instance out of service: its status, when it stopped, its seconds metered
    up to then (agents.metering, after commit). The caller saves it and frees the pool."""
    metering.meter_on_commit(instance, until=now)
    instance.status = status
    instance.stopped_at = instance.stopped_at or now


def _announce_stop(actor: Actor, instance: AgentInstance, *, reason: str) -> None:
    # instance.save(update_fields=["status", "stopped_at", "metered_until"]), prepared.
    with sql.cursor() as cursor:
        cursor.execute(
            _END_INSTANCE,
            [str(instance.status), instance.stopped_at, instance.metered_until, instance.pk],
        )
        if cursor.rowcount != 1:  # as save(update_fields=...) with no row to update
            raise DatabaseError("Save with update_fields did not affect any rows.")
    payload = {**instance_payload(instance), "reason": reason}
    audit.emit(
        actor=actor,
        action="instance.stopped",
        resource_type="instance",
        resource_id=instance.pk,
        details=payload,
        data=payload,
    )


def _locked_instance(agent_pk: Any, pk: Any) -> AgentInstance | None:
    """The agent's instance `pk`, its row locked until the transaction ends (None if none)."""
    if not (agent_pk and pk):
        return None
    with sql.cursor() as cursor:
        cursor.execute(_LOCK_INSTANCE, [agent_pk, pk])
        row = cursor.fetchone()
    return None if row is None else AgentInstance.from_db(DEFAULT_DB_ALIAS, None, row)


def instance_stop(*, actor: Actor, agent_id: Any, instance_id: Any) -> AgentInstance:
    """Stop an instance and return its resources to the pool at once.

    A pending instance (no runtime has reported yet) is `stopped`; a running one is `stopping`
    until its runtime confirms (`instance_report`). Stopping a stopped instance changes nothing.
    """
    audit.require(
        actor,
        "agents:write",
        action="instance.stopped",
        resource_type="instance",
        resource_id=instance_id,
    )
    agent_pk, pk = selectors.as_uuid(agent_id), selectors.as_uuid(instance_id)
    with sql.atomic() as last:
        instance = _locked_instance(agent_pk, pk)
        if instance is None:
            raise AgentInstance.DoesNotExist
        if not instance.is_active:
            return instance
        was_running = instance.status == InstanceStatus.RUNNING
        _end(
            instance,
            InstanceStatus.STOPPING if was_running else InstanceStatus.STOPPED,
            timezone.now(),
        )
        _announce_stop(actor, instance, reason="requested")
        # Last, with the COMMIT: the pool row is locked for PostgreSQL's time only.
        _pool_change(_freed([instance]), last=last)
    return instance


# What a runtime may report, from each status (anything else is refused).
REPORTABLE = {
    InstanceStatus.PENDING: {InstanceStatus.RUNNING, InstanceStatus.STOPPED, InstanceStatus.FAILED},
    InstanceStatus.RUNNING: {InstanceStatus.RUNNING, InstanceStatus.STOPPED, InstanceStatus.FAILED},
    InstanceStatus.STOPPING: {
        InstanceStatus.STOPPING,
        InstanceStatus.STOPPED,
        InstanceStatus.FAILED,
    },
}


def instance_report(*, actor: Actor, instance_id: Any, status: str) -> AgentInstance:
    """A runtime's heartbeat and status for its instance (the message gateway calls this).

    `running` from pending marks the start; any report refreshes `last_heartbeat_at`; a
    `running` heartbeat meters the instance's seconds since the last one (agents.metering);
    `stopped` or `failed` from an active status meters the rest and returns the resources to the
    pool. A change of status is audited and announced as `instance.<status>`; a plain heartbeat
    is not, and never touches the pool row: only a report that frees resources changes it, as
    the transaction's last statement.
    """
    audit.require(
        actor,
        "agents:write",
        action="instance.reported",
        resource_type="instance",
        resource_id=instance_id,
    )
    pk = selectors.as_uuid(instance_id)
    if status not in InstanceStatus.values:
        raise field_error("status", "Unknown status.", "invalid")
    with transaction.atomic():
        instance = AgentInstance.objects.select_for_update().filter(pk=pk).first() if pk else None
        if instance is None:
            raise AgentInstance.DoesNotExist
        allowed = REPORTABLE.get(instance.status, set())
        if status not in allowed:
            raise field_error(
                "status",
                f"An instance that is {instance.status} cannot report {status}.",
                "invalid_transition",
            )
        now = timezone.now()
        previous = instance.status
        instance.last_heartbeat_at = now
        fields = ["last_heartbeat_at"]
        frees = previous in ACTIVE_STATUSES and status not in ACTIVE_STATUSES
        if previous == InstanceStatus.PENDING and status == InstanceStatus.RUNNING:
            instance.started_at = instance.metered_until = now
            fields += ["started_at", "metered_until"]
        elif previous == InstanceStatus.RUNNING and status == InstanceStatus.RUNNING:
            metering.meter_on_commit(instance, until=now)
            fields.append("metered_until")
        elif frees:
            _end(instance, status, now)
            fields += ["stopped_at", "metered_until"]
        elif status in {InstanceStatus.STOPPED, InstanceStatus.FAILED}:
            instance.stopped_at = instance.stopped_at or now  # stopping, now confirmed
            fields.append("stopped_at")
        if status != previous:
            instance.status = status
            fields.append("status")
        instance.save(update_fields=fields)
        if status != previous:
            audit.emit(
                actor=actor,
                action=f"instance.{status}",
                resource_type="instance",
                resource_id=instance.pk,
                details={**instance_payload(instance), "from": previous},
                data={**instance_payload(instance), "from": previous},
            )
        if frees:
            _pool_change(_freed([instance]))  # last: the pool row is locked for the commit only
    return instance


# --- Config ----------------------------------------------------------------------------------


def _next_revision() -> int:
    ConfigState.objects.get_or_create(pk=SINGLETON_PK)
    state = ConfigState.objects.select_for_update().get(pk=SINGLETON_PK)
    state.revision += 1
    state.save(update_fields=["revision"])
    return state.revision


def _invalidate_after_commit(namespace: str) -> None:
    transaction.on_commit(lambda: config_cache.invalidate(namespace))


def _record_version(
    *, actor: Actor, key: str, value: Any, revision: int, restored_from: int | None = None
) -> ConfigVersion:
    """Add the key's next version (the caller holds the revision lock, which orders writers)."""
    last = (
        ConfigVersion.objects.filter(key=key).order_by("-number").values_list("number", flat=True)
    )
    number = (last.first() or 0) + 1
    return ConfigVersion.objects.create(
        key=key,
        number=number,
        value=value,
        revision=revision,
        created_by=actor.label,
        restored_from=restored_from,
    )


def config_set(*, actor: Actor, key: Any, value: Any) -> ConfigKey:
    """Set a config key of the organization (JSON, 64 KB at most; key pattern in
    agents.configuration). Publishes `config.changed` {key, value, version} after commit, where
    `version` is the organization's revision; the key's own version (1, 2, 3 ...) is recorded in
    its history (ConfigVersion) and returned as `entry.key_version`."""
    return _config_write(actor=actor, key=key, value=value)


def config_rollback(*, actor: Actor, key: Any, number: Any) -> ConfigKey:
    """Set `key` back to the value of its version `number`: a new version (history only grows),
    audited as `config.changed` with `restored_from`. ConfigVersion.DoesNotExist when the key
    has no such version or that version is a deletion."""
    audit.require(
        actor,
        "config:write",
        action="config.changed",
        resource_type="config",
        resource_id=key if isinstance(key, str) else "",
    )
    key = validate_key(key)
    if isinstance(number, bool) or not isinstance(number, int) or number < 1:
        raise ConfigVersion.DoesNotExist
    target = ConfigVersion.objects.filter(key=key, number=number, value__isnull=False).first()
    if target is None:
        raise ConfigVersion.DoesNotExist
    return _config_write(actor=actor, key=key, value=target.value, restored_from=number)


def _config_write(
    *, actor: Actor, key: Any, value: Any, restored_from: int | None = None
) -> ConfigKey:
    audit.require(
        actor,
        "config:write",
        action="config.changed",
        resource_type="config",
        resource_id=key if isinstance(key, str) else "",
    )
    key, value = validate_entry(key, value)
    tenant = context.require_tenant()
    with transaction.atomic():
        existing = ConfigKey.objects.select_for_update().filter(key=key).first()
        if existing is not None and same_json(existing.value, value):
            existing.key_version = _latest_number(key)
            return existing
        version = _next_revision()
        entry, created = ConfigKey.objects.update_or_create(
            key=key, defaults={"value": value, "version": version, "updated_by": actor.label}
        )
        recorded = _record_version(
            actor=actor, key=key, value=value, revision=version, restored_from=restored_from
        )
        details = {
            "key": key,
            "version": version,
            "key_version": recorded.number,
            "bytes": encoded_size(value),
            "created": created,
        }
        if restored_from is not None:
            details["restored_from"] = restored_from
        audit.emit(
            actor=actor,
            action="config.changed",
            resource_type="config",
            resource_id=key,
            details=details,
            data={"key": key, "value": value, "version": version},
        )
        _invalidate_after_commit(str(tenant.public_id))
    entry.key_version = recorded.number
    return entry


def _latest_number(key: str) -> int:
    numbers = ConfigVersion.objects.filter(key=key).order_by("-number")
    return numbers.values_list("number", flat=True).first() or 0


def config_delete(*, actor: Actor, key: Any) -> None:
    """Remove a config key: `config.changed` with a null value (the next layer down applies).
    The deletion is a version of its own in the key's history."""
    audit.require(
        actor,
        "config:write",
        action="config.changed",
        resource_type="config",
        resource_id=key if isinstance(key, str) else "",
    )
    key = validate_key(key)
    tenant = context.require_tenant()
    with transaction.atomic():
        entry = ConfigKey.objects.select_for_update().filter(key=key).first()
        if entry is None:
            raise ConfigKey.DoesNotExist
        version = _next_revision()
        entry.delete()
        recorded = _record_version(actor=actor, key=key, value=None, revision=version)
        audit.emit(
            actor=actor,
            action="config.changed",
            resource_type="config",
            resource_id=key,
            details={
                "key": key,
                "version": version,
                "key_version": recorded.number,
                "deleted": True,
            },
            data={"key": key, "value": None, "version": version},
        )
        _invalidate_after_commit(str(tenant.public_id))


# --- Staff: platform defaults and limit overrides (public schema) ----------------------------


def platform_config_default_set(*, actor: Actor, key: Any, value: Any) -> Any:
    """Set a platform-wide default (staff): the lowest layer of every organization's config."""
    from tenants.models import PlatformConfigDefault

    audit.require_staff(actor, "platform_config.changed", "platform_config", key)
    key, value = validate_entry(key, value)
    with context.public_context(), transaction.atomic():
        entry, created = PlatformConfigDefault.objects.update_or_create(
            key=key, defaults={"value": value, "updated_by": actor.label}
        )
        audit.record(
            actor=actor,
            action="platform_config.changed",
            resource_type="platform_config",
            resource_id=key,
            details={"key": key, "bytes": encoded_size(value), "created": created},
        )
        _invalidate_after_commit(config_cache.PLATFORM)
    return entry


def platform_config_default_delete(*, actor: Actor, key: str) -> None:
    from tenants.models import PlatformConfigDefault

    audit.require_staff(actor, "platform_config.changed", "platform_config", key)
    with context.public_context(), transaction.atomic():
        deleted, _ = PlatformConfigDefault.objects.filter(key=key).delete()
        if not deleted:
            raise PlatformConfigDefault.DoesNotExist
        audit.record(
            actor=actor,
            action="platform_config.changed",
            resource_type="platform_config",
            resource_id=key,
            details={"key": key, "deleted": True},
        )
        _invalidate_after_commit(config_cache.PLATFORM)


def organization_limits_set(
    *, actor: Actor, tenant: Tenant, overrides: dict[str, int | None]
) -> Tenant:
    """Override (or, with None, restore to the plan's) an organization's limits (staff).

    Lowering a limit below what is in use stops nothing: new allocations are refused until usage
    fits. Recorded in the platform's log and in the organization's own.
    """
    from tenants.models import Tenant

    audit.require_staff(actor, "organization.limits_changed", "organization", tenant.public_id)
    unknown = sorted(set(overrides) - set(LIMIT_NAMES))
    if unknown:
        raise ValidationError({name: ["Unknown limit."] for name in unknown})
    for name, value in overrides.items():
        if value is not None and (
            not isinstance(value, int) or isinstance(value, bool) or value < 0
        ):
            raise field_error(name, "Enter a whole number of at least 0, or nothing.", "invalid")
    with context.public_context(), transaction.atomic():
        current = Tenant.objects.select_for_update().get(pk=tenant.pk)
        changes = {}
        for name, value in overrides.items():
            field = f"{name}_override"
            if getattr(current, field) != value:
                changes[name] = {"from": getattr(current, field), "to": value}
                setattr(current, field, value)
        if not changes:
            return current
        current.save(update_fields=[f"{name}_override" for name in changes])
        audit.record_in_both_logs(
            actor=actor,
            tenant=current,
            action="organization.limits_changed",
            resource_type="organization",
            resource_id=str(current.public_id),
            details=changes,
        )
        routing.clear_on_commit()
    return current

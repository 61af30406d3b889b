"""Every write and check of the gateway: publishes, tasks, agent attachment, heartbeats, metrics.

These run in the organization's context (consumers enter it inside `database_sync_to_async`).
A refusal is recorded as a denied audit event and raised as `Refused`; nothing refused reaches
the channel layer. A message is admitted by billing in one Redis round trip: per-connection and
per-organization rate limits, the plan's monthly quota and the usage ledger's counters, keyed by
the organization's id, with no database write (billing.services.message_admit).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any, NoReturn

from django.conf import settings
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.utils import timezone

from agents import selectors as agent_selectors
from agents import services as agent_services
from agents.models import AgentInstance, InstanceStatus
from audit import services as audit
from audit.models import Result
from billing import services as billing
from core import errors, strictjson
from core.actors import Actor
from gateway import subjects
from gateway.models import InstanceMetric
from tenants import context, events
from vault import services as vault_services

if TYPE_CHECKING:
    from tenants.models import Tenant

logger = logging.getLogger(__name__)

READ_PERMISSION = "agents:read"
PUBLISH_PERMISSION = "tasks:publish"
TASK_SUBJECT = "agents.task"
METRIC_FIELDS = ("cpu_percent", "memory_mb", "queue_depth", "response_ms", "tasks_done")
# Plans change rarely; reading the tenant row on every publish would double the work.
LIMITS_TTL_SECONDS = 30.0
_limits_cache: dict[int, tuple[float, int]] = {}


def _printable(value: object) -> str:
    """A refused subject as the audit trail keeps it: cut, control characters (NUL, which
    PostgreSQL text refuses, included) replaced."""
    if not isinstance(value, str):
        return ""
    return "".join(c if c.isprintable() else "\ufffd" for c in value[:128])


def _refuse(actor: Actor, action: str, subject: object, error: errors.DomainError) -> NoReturn:
    """Record the refusal in the organization's log, then raise it to the caller."""
    audit.record(
        actor=actor,
        action=action,
        resource_type="subject",
        resource_id=_printable(subject),
        result=Result.DENIED,
        details={"reason": error.code},
    )
    raise error


def _monthly_quota(tenant: Tenant) -> int:
    now = time.monotonic()
    cached = _limits_cache.get(tenant.pk)
    if cached is not None and now - cached[0] < LIMITS_TTL_SECONDS:
        return cached[1]
    quota = agent_selectors.limits_get(tenant=tenant).messages_per_month
    _limits_cache[tenant.pk] = (now, quota)
    return quota


def _checked_size(data: Any, field_name: str) -> int:
    """The encoded size of a message or task, once it passed the strict JSON checks (depth,
    finite numbers, no lone surrogates): what a subscriber's strict parser can read back."""
    try:
        strictjson.check(data, max_depth=strictjson.MAX_VALUE_DEPTH)
        return strictjson.encoded_size(data)
    except strictjson.InvalidJson as error:
        raise ValidationError(
            {field_name: [ValidationError(error.message, code=error.code)]}
        ) from error


def _meter(
    actor: Actor,
    action: str,
    subject: str,
    *,
    connection_id: str | None,
    agent_id: str | None = None,
    meters: tuple[str, ...] = ("gateway_messages",),
) -> None:
    """Rate limits (per connection, per organization), the monthly quota and the usage counters:
    one Redis round trip (billing.services.message_admit), no database write."""
    tenant = context.require_tenant()
    try:
        billing.message_admit(
            actor=actor,
            monthly_limit=_monthly_quota(tenant),
            connection_id=connection_id,
            agent_id=agent_id,
            meters=meters,
        )
    except errors.RateLimited as error:
        error.message = "Too many messages: slow down."  # the same refusal, counted once
        _refuse(actor, action, subject, error)
    except (errors.UsageExhausted, errors.RateLimiterUnavailable) as error:
        _refuse(actor, action, subject, error)


def subscription_check(*, actor: Actor, pattern: object) -> str:
    """The validated pattern, if `actor` may subscribe to it."""
    try:
        pattern = subjects.validate_pattern(pattern)
    except subjects.InvalidSubject as error:
        _refuse(actor, "gateway.subscribe", pattern, errors.Forbidden(error.code, error.message))
    if not actor.can(READ_PERMISSION):
        _refuse(
            actor,
            "gateway.subscribe",
            pattern,
            errors.Forbidden(
                "permission_denied", f"Subscribing needs the “{READ_PERMISSION}” permission."
            ),
        )
    return str(pattern)


def agent_may_publish(agent_id: str | None, subject: str) -> bool:
    """What an attached agent may publish without `tasks:publish`: its results, its subjects."""
    if agent_id is None:
        return False
    return subjects.matches("agents.result.>", subject) or subjects.matches(
        f"agents.{agent_id}.>", subject
    )


def _publish_check(*, actor: Actor, subject: object, data: Any, agent_id: str | None) -> str:
    """The validated subject of a message `actor` may publish; raises `_Refusal` (to audit) or
    ValidationError (data that is not strict JSON). No I/O: the event loop may call it."""
    try:
        subject = subjects.validate_subject(subject)
    except subjects.InvalidSubject as error:
        raise _Refusal(subject, errors.Forbidden(error.code, error.message)) from None
    subject = str(subject)
    if not actor.can(PUBLISH_PERMISSION) and not agent_may_publish(agent_id, subject):
        raise _Refusal(
            subject,
            errors.Forbidden(
                "permission_denied", f"Publishing here needs the “{PUBLISH_PERMISSION}” permission."
            ),
        )
    if _checked_size(data, "data") > settings.GATEWAY_MAX_MESSAGE_BYTES:
        raise _Refusal(
            subject, errors.Forbidden("message_too_large", "A message has at most 64 KB.")
        )
    return subject


class _Refusal(Exception):
    def __init__(self, subject: object, error: errors.DomainError) -> None:
        super().__init__(error.code)
        self.subject, self.error = subject, error


def publish_ticket(
    *, actor: Actor, connection_id: str | None, agent_id: str | None
) -> billing.MessageTicket:
    """What a connection's messages are counted against (billing.message_ticket): reads the
    plan (cached), so it runs in the database thread, once per ticket."""
    tenant = context.require_tenant()
    return billing.message_ticket(
        actor=actor,
        monthly_limit=_monthly_quota(tenant),
        connection_id=connection_id,
        agent_id=agent_id,
    )


async def _ticket(
    tickets: dict[str, Any], owner: tuple[Any, ...], build: Callable[[], Awaitable[Any]]
) -> billing.MessageTicket:
    """The connection's valid ticket for `owner` (its actor and agent), built when missing,
    stale or another's. One build serves every message waiting on it, so that they still reach
    Redis in the order they came."""
    for _ in range(2):
        building = tickets.get("ticket")
        if building is None or tickets.get("for") != owner:
            building = asyncio.ensure_future(build())
            tickets.update({"ticket": building, "for": owner})
        try:
            ticket = await building
        except BaseException:
            if tickets.get("ticket") is building:
                tickets.clear()
            raise
        if ticket.valid():
            if ticket.due() and tickets.get("next") is None:
                # Half its life gone: the next is built meanwhile, so that no message waits for
                # the database thread (busy with other sockets' work) at its expiry.
                tickets["next"] = asyncio.ensure_future(_replace(tickets, owner, build))
            return ticket
        if tickets.get("ticket") is building:
            tickets.clear()
    return ticket


async def _replace(
    tickets: dict[str, Any], owner: tuple[Any, ...], build: Callable[[], Awaitable[Any]]
) -> None:
    try:
        ticket = await build()
    except Exception:  # noqa: BLE001 - the current ticket stays; its expiry builds again
        logger.warning("gateway: could not renew a publish ticket", exc_info=True)
        tickets.pop("next", None)
        return
    if tickets.get("for") == owner:
        future = asyncio.get_running_loop().create_future()
        future.set_result(ticket)
        tickets.update({"ticket": future})
    tickets.pop("next", None)


async def message_publish_async(
    *,
    tenant: Tenant,
    actor: Actor,
    subject: object,
    data: Any,
    connection_id: str,
    agent_id: str | None,
    tickets: dict[str, Any],
    run_sync: Callable[..., Awaitable[Any]],
) -> dict[str, Any]:
    """Check, meter and stamp one message from the event loop (the gateway's sockets); returns
    the layer message to fan out. Billing's Lua call without a thread hop per message
    (billing.message_admit_async); a refusal is audited and raised as in `task_publish`.
    `tickets` is the connection's cache of its billing ticket; `run_sync(function, *args,
    **kwargs)` runs a function in the organization where the database may be used (building a
    ticket, recording a refusal, billing's rare steps)."""
    action = "gateway.publish"
    try:
        checked = _publish_check(actor=actor, subject=subject, data=data, agent_id=agent_id)
    except _Refusal as refusal:
        await run_sync(_refuse, actor, action, refusal.subject, refusal.error)
        raise AssertionError("unreachable") from None
    ticket = await _ticket(
        tickets,
        (actor, agent_id),
        lambda: run_sync(
            publish_ticket, actor=actor, connection_id=connection_id, agent_id=agent_id
        ),
    )
    try:
        await billing.message_admit_async(ticket, run_sync=run_sync)
    except errors.RateLimited as error:
        error.message = "Too many messages: slow down."  # the same refusal, counted once
        await run_sync(_refuse, actor, action, checked, error)
    except (errors.UsageExhausted, errors.RateLimiterUnavailable) as error:
        await run_sync(_refuse, actor, action, checked, error)
    return events.event_message(str(tenant.public_id), checked, data)


def task_publish(*, actor: Actor, task: Any, agent_id: Any = None) -> dict[str, Any]:
    """Publish a task to every agent (`agents.task`) or one agent (`agents.<id>.task`).

    Audited as `task.published`; the task goes out after commit. Returns `{id, subject}`.
    """
    action = "task.published"
    if not actor.can(PUBLISH_PERMISSION):
        _refuse(
            actor,
            action,
            TASK_SUBJECT,
            errors.Forbidden(
                "permission_denied", f"This needs the “{PUBLISH_PERMISSION}” permission."
            ),
        )
    subject = TASK_SUBJECT
    if agent_id is not None:
        agent = agent_selectors.agent_get(actor=actor, agent_id=agent_id)  # 404 when not ours
        subject = f"agents.{agent.pk}.task"
    if not isinstance(task, dict):
        raise ValidationError({"task": ["Give the task as an object."]})
    if _checked_size(task, "task") > settings.GATEWAY_MAX_MESSAGE_BYTES:
        raise ValidationError({"task": ["A task has at most 64 KB."]})
    _meter(actor, action, subject, connection_id=None, meters=("gateway_messages", "tasks"))
    task_id = uuid.uuid4().hex
    payload = {**task, "id": task_id}
    with transaction.atomic():
        audit.emit(
            actor=actor,
            action=action,
            subject=subject,
            resource_type="task",
            resource_id=task_id,
            details={"subject": subject, "kind": str(task.get("kind", ""))[:64]},
            data=payload,
            verbatim=True,
        )
    return {"id": task_id, "subject": subject}


# --- Agent runtimes --------------------------------------------------------------------------


def instance_attach(*, actor: Actor, instance_id: Any) -> dict[str, Any]:
    """A runtime starts serving an instance: mark it running; return it, its agent, its config,
    and the values of the secrets its agent references (only those; `secrets:use` needed when
    there are any, checked before anything changes; each delivery audited by the vault)."""
    pk = agent_selectors.as_uuid(instance_id)
    found = AgentInstance.objects.select_related("agent").filter(pk=pk).first() if pk else None
    names = list(found.agent.secrets) if found is not None else []
    if names and actor.can("agents:write"):
        audit.require(
            actor,
            "secrets:use",
            action="secret.delivered",
            resource_type="instance",
            resource_id=str(pk),
        )
    instance = agent_services.instance_report(
        actor=actor, instance_id=instance_id, status=InstanceStatus.RUNNING
    )
    view = runtime_view(actor=actor, instance=instance)
    delivered = vault_services.secrets_deliver(
        actor=actor, names=names, agent_id=view["agent"]["id"], instance_id=view["instance"]
    )
    # Never logged, published or stored: the attach reply goes to this socket only.
    view["secrets"] = delivered["values"]
    view["missing_secrets"] = delivered["missing"]
    return view


def runtime_view(*, actor: Actor, instance: AgentInstance) -> dict[str, Any]:
    agent = agent_selectors.agent_get(actor=actor, agent_id=instance.agent_id)
    resolution = agent_selectors.config_resolve(
        actor=actor, agent_type=agent.type, definition=agent.config
    )
    return {
        "instance": str(instance.pk),
        "status": instance.status,
        "agent": {
            "id": str(agent.pk),
            "name": agent.name,
            "type": agent.type,
            "tools": list(agent.tools),
        },
        "config": resolution.value,
    }


def config_for(*, actor: Actor, instance_id: Any) -> dict[str, Any]:
    instance = AgentInstance.objects.filter(pk=agent_selectors.as_uuid(instance_id)).first()
    if instance is None:
        raise AgentInstance.DoesNotExist
    return runtime_view(actor=actor, instance=instance)


def _clean_metrics(metrics: Any) -> dict[str, float | int]:
    if not isinstance(metrics, dict):
        raise ValidationError({"metrics": ["Give metrics as an object."]})
    unknown = sorted(str(name)[:32] for name in metrics if name not in METRIC_FIELDS)
    if unknown:
        raise ValidationError({"metrics": [f"Unknown metrics: {', '.join(unknown)}."]})
    clean: dict[str, float | int] = {}
    for name in METRIC_FIELDS:
        value = metrics.get(name, 0)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValidationError({name: ["Must be a number."]})
        if not math.isfinite(value) or value < 0 or value > 1e12:
            raise ValidationError({name: ["Out of range."]})
        clean[name] = int(value) if name in {"queue_depth", "tasks_done"} else float(value)
    return clean


def heartbeat_record(*, actor: Actor, instance_id: Any, metrics: Any) -> AgentInstance:
    """A heartbeat: refresh the instance (agents' instance_report) and store this minute's
    metrics (latest sample wins), then announce them on `agents.<agent_id>.metrics`."""
    clean = _clean_metrics(metrics if metrics is not None else {})
    instance = agent_services.instance_report(
        actor=actor, instance_id=instance_id, status=InstanceStatus.RUNNING
    )
    minute = timezone.now().replace(second=0, microsecond=0)
    with transaction.atomic():
        InstanceMetric.objects.bulk_create(
            [InstanceMetric(instance=instance, agent_id=instance.agent_id, minute=minute, **clean)],
            update_conflicts=True,
            unique_fields=["instance", "minute"],
            update_fields=[*METRIC_FIELDS, "updated_at"],
        )
        audit.emit(
            actor=actor,
            action=None,
            subject=f"agents.{instance.agent_id}.metrics",
            data={"instance": str(instance.pk), "minute": minute.isoformat(), **clean},
            verbatim=True,
        )
    return instance


def instance_detach(*, actor: Actor, instance_id: Any, status: str) -> AgentInstance:
    """A runtime stopping on purpose reports `stopped` (or `failed`)."""
    if status not in {InstanceStatus.STOPPED, InstanceStatus.FAILED}:
        raise ValidationError({"status": ["Report `stopped` or `failed`."]})
    return agent_services.instance_report(actor=actor, instance_id=instance_id, status=status)


def instances_fail_stale(*, actor: Actor, timeout_seconds: int | None = None) -> list[str]:
    """Mark failed every running instance whose last heartbeat is older than the timeout.

    Returns the ids marked. Each goes through agents' instance_report (audit, pool, event).
    """
    if actor.kind != "system":
        raise PermissionDenied("Only the platform fails instances.")
    timeout = timeout_seconds or settings.GATEWAY_HEARTBEAT_TIMEOUT_SECONDS
    cutoff = timezone.now() - timedelta(seconds=timeout)
    stale = list(
        AgentInstance.objects.filter(
            status=InstanceStatus.RUNNING, last_heartbeat_at__lt=cutoff
        ).values_list("pk", flat=True)
    )
    failed = []
    for pk in stale:
        try:
            agent_services.instance_report(actor=actor, instance_id=pk, status="failed")
        except ValidationError:
            continue  # it changed status meanwhile (stopped, or reported in)
        failed.append(str(pk))
    return failed

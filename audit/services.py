"""The one way to record what happened, and to announce it: `record` and `emit`."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from audit.actors import Actor
from audit.models import AuditEvent, Result
from tenants import context, events

GENESIS_HASH = "0" * 64
PLATFORM_TENANT_ID = "platform"
# Keys whose values never enter an event, whatever their nesting.
SECRET_FIELD_MARKERS = (
    "password",
    "secret",
    "token",
    "api_key",
    "apikey",
    "authorization",
    "key_hash",
)
REDACTED = "[redacted]"


def redact(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            key: REDACTED if _is_secret_field(str(key)) else redact(item)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact(item) for item in value]
    return value


def _is_secret_field(name: str) -> bool:
    lowered = name.lower()
    return any(marker in lowered for marker in SECRET_FIELD_MARKERS)


def canonical_form(event: AuditEvent) -> bytes:
    """The bytes that an event's hash covers: every recorded field, in a fixed order."""
    payload = {
        "tenant_id": event.tenant_id,
        "sequence": event.sequence,
        "occurred_at": event.occurred_at.isoformat(),
        "actor_kind": event.actor_kind,
        "actor_id": event.actor_id,
        "actor_label": event.actor_label,
        "action": event.action,
        "resource_type": event.resource_type,
        "resource_id": event.resource_id,
        "result": event.result,
        "ip": event.ip,
        "user_agent": event.user_agent,
        "details": event.details,
        "previous_hash": event.previous_hash,
    }
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str).encode()


def compute_hash(event: AuditEvent) -> str:
    return hashlib.sha256(canonical_form(event)).hexdigest()


def current_tenant_id() -> str:
    tenant = context.current_tenant()
    return str(tenant.public_id) if tenant is not None else PLATFORM_TENANT_ID


def record(
    *,
    actor: Actor,
    action: str,
    resource_type: str = "",
    resource_id: str | int = "",
    result: str = Result.SUCCESS,
    details: dict[str, Any] | None = None,
) -> AuditEvent:
    """Append one event to the current context's log, in the caller's transaction.

    The chain's tail is serialised with a transaction-level advisory lock, so concurrent writers
    in one schema queue up instead of forking the chain; the lock is released at commit.
    """
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(hashtext(current_schema() || '.audit'))")
        last = AuditEvent.objects.order_by("-sequence").values_list("sequence", "hash").first()
        sequence, previous_hash = (last[0] + 1, last[1]) if last else (1, GENESIS_HASH)
        event = AuditEvent(
            tenant_id=current_tenant_id(),
            sequence=sequence,
            occurred_at=timezone.now(),
            actor_kind=actor.kind,
            actor_id=actor.id,
            actor_label=actor.label,
            action=action,
            resource_type=resource_type,
            resource_id=str(resource_id),
            result=result,
            ip=actor.ip,
            user_agent=actor.user_agent,
            details=redact(details or {}),
            previous_hash=previous_hash,
        )
        event.hash = compute_hash(event)
        event.save(force_insert=True)
    return event


def emit(
    *,
    actor: Actor,
    action: str,
    resource_type: str = "",
    resource_id: str | int = "",
    details: dict[str, Any] | None = None,
    data: dict[str, Any] | None = None,
) -> AuditEvent:
    """Record a successful change and publish it as `action` to the organization's namespace.

    The audit event is written in the caller's transaction; the real-time event goes out only
    after that transaction commits (and never if it rolls back). `data` is the event payload
    (defaults to the audit details).
    """
    event = record(
        actor=actor,
        action=action,
        resource_type=resource_type,
        resource_id=resource_id,
        details=details,
    )
    tenant = context.current_tenant()
    if tenant is not None:
        events.publish_on_commit(
            tenant, action, redact(data if data is not None else details or {})
        )
    return event

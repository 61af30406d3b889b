"""The audit log's chain: what an event's hash covers, and values cleaned so that the hash
survives a round trip through PostgreSQL. Pure functions: recording, verification and exports
all build on them."""

from __future__ import annotations

import hashlib
import ipaddress
import json
import math
from typing import Any

from django.utils.ipv6 import clean_ipv6_address

from audit.models import AuditEvent

GENESIS_HASH = "0" * 64
# The action of a retention run: the chain continues after its checkpoint (audit.retention).
RETENTION_ACTION = "audit.retention_applied"
# Keys whose values never enter an event, whatever their nesting.
SECRET_FIELD_MARKERS = (
    "password",
    "secret",
    "token",
    "api_key",
    "apikey",
    "authorization",
    "key_hash",
    "private_key",
    "credential",
    "cookie",
    "session",
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


def valid_utf8(text: str) -> str:
    """Lone surrogates (from a JSON body's "\\ud800") cannot be stored: keep them as escapes."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def clean_text(value: Any, limit: int) -> str:
    # PostgreSQL text cannot hold NUL; an attacker-chosen value must not turn a record into a 500.
    return valid_utf8(str(value).replace("\x00", "\ufffd"))[:limit]


def clean_ip(value: str | None) -> str | None:
    """The address as PostgreSQL's inet gives it back (the hash covers it), or None if invalid."""
    if not value:
        return None
    try:
        address = ipaddress.ip_address(str(value).strip())
    except ValueError:
        return None
    return str(address) if address.version == 4 else clean_ipv6_address(str(address))


def _clean_value(value: Any) -> Any:
    if isinstance(value, str):
        return valid_utf8(value.replace("\x00", "\ufffd"))
    if isinstance(value, dict):
        return {_clean_value(str(key)): _clean_value(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_clean_value(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # jsonb has no NaN or infinity
    return value


def clean_details(details: dict[str, Any]) -> dict[str, Any]:
    """Redacted, and exactly what jsonb will give back (so the hash is stable after a reload)."""
    return _clean_value(json.loads(json.dumps(redact(details), default=str)))


def hashed_fields(event: AuditEvent) -> dict[str, Any]:
    """Every recorded field of an event that its hash covers (all but the hash itself)."""
    return {
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


def canonical_form(event: AuditEvent) -> bytes:
    """The bytes that an event's hash covers, in a fixed order."""
    payload = hashed_fields(event)
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str).encode()


def compute_hash(event: AuditEvent) -> str:
    return hashlib.sha256(canonical_form(event)).hexdigest()

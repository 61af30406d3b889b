"""The audit log's chain: what an event's hash covers, and values cleaned so that the hash
survives a round trip through PostgreSQL. Pure functions: recording, verification and exports
all build on them."""

from __future__ import annotations

import functools
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


@functools.lru_cache(maxsize=4096)
def _is_secret_field(name: str) -> bool:
    # Cached: events repeat the same few keys (any string is a valid key, so the cache is bounded).
    lowered = name.lower()
    return any(marker in lowered for marker in SECRET_FIELD_MARKERS)


def valid_utf8(text: str) -> str:
    """Lone surrogates (from a JSON body's "\\ud800") cannot be stored: keep them as escapes."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _clean_str(text: str) -> str:
    """`text` as it can be stored: NUL replaced, lone surrogates escaped (ASCII has neither to
    escape: it is returned as it is unless it holds a NUL)."""
    if text.isascii() and "\x00" not in text:
        return text
    return valid_utf8(text.replace("\x00", "\ufffd"))


def clean_text(value: Any, limit: int) -> str:
    # PostgreSQL text cannot hold NUL; an attacker-chosen value must not turn a record into a 500.
    return _clean_str(value if type(value) is str else str(value))[:limit]


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
    try:
        return _clean_plain(details)
    except _NotPlain:
        return _clean_value(json.loads(json.dumps(redact(details), default=str)))


class _NotPlain(Exception):
    """A value whose JSON round trip is not the identity (a tuple, a UUID, a non-finite float, a
    key that is not a string ...): cleaned the long way, through that round trip."""


def _clean_plain(value: Any) -> Any:
    """`clean_details` in one pass for what most events carry: dicts with string keys, lists,
    strings without surrogates, integers, booleans, None and finite floats, for which a JSON
    round trip changes nothing (a value of a str subclass, such as a TextChoices member, becomes
    its plain string, as JSON gives it back). Anything else raises _NotPlain. A test holds it
    equal to the round trip."""
    kind = type(value)
    if kind is str:
        return _plain_str(value)
    if kind is int or kind is bool or value is None:
        return value
    if kind is dict:
        cleaned = {}
        for key, item in value.items():
            if type(key) is not str:
                raise _NotPlain
            cleaned[_plain_str(key)] = REDACTED if _is_secret_field(key) else _clean_plain(item)
        return cleaned
    if kind is list:
        return [_clean_plain(item) for item in value]
    if kind is float and math.isfinite(value):
        return value
    if isinstance(value, str):
        return _plain_str(str.__str__(value))
    raise _NotPlain


def _plain_str(text: str) -> str:
    # A surrogate (lone, or a pair that JSON would join into one character) is not plain.
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise _NotPlain from None
    return text.replace("\x00", "\ufffd") if "\x00" in text else text


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

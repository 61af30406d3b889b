"""The one way to record what happened (`record`, `emit`), and every write to the audit app."""

from __future__ import annotations

import hashlib
import ipaddress
import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, NoReturn

from django.conf import settings
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import connection, transaction
from django.utils import timezone
from django.utils.ipv6 import clean_ipv6_address

from audit import exports, rules
from audit.actors import Actor
from audit.models import Alert, AlertRule, AuditCheckpoint, AuditEvent, Result
from audit.selectors import EventFilters, require_audit_read
from audit.verify import RETENTION_ACTION, VerifyReport, verify_chain
from tenants import context, events, ratelimit

GENESIS_HASH = "0" * 64
PLATFORM_TENANT_ID = "platform"
# Both halves of the chain's advisory lock key: a class of lock, then the schema.
CHAIN_LOCK_CLASS = 0x41554454  # "AUDT"
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
# Column sizes of AuditEvent: longer input (a user agent, an attempted email) is cut, not refused.
_LIMITS = {
    "actor_kind": 16,
    "actor_id": 64,
    "actor_label": 254,
    "action": 64,
    "resource_type": 64,
    "resource_id": 128,
    "user_agent": 256,
}


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


def _valid_utf8(text: str) -> str:
    """Lone surrogates (from a JSON body's "\\ud800") cannot be stored: keep them as escapes."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _clean_text(value: Any, limit: int) -> str:
    # PostgreSQL text cannot hold NUL; an attacker-chosen value must not turn a record into a 500.
    return _valid_utf8(str(value).replace("\x00", "\ufffd"))[:limit]


def _clean_ip(value: str | None) -> str | None:
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
        return _valid_utf8(value.replace("\x00", "\ufffd"))
    if isinstance(value, dict):
        return {_clean_value(str(key)): _clean_value(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_clean_value(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # jsonb has no NaN or infinity
    return value


def _clean_details(details: dict[str, Any]) -> dict[str, Any]:
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


def current_tenant_id() -> str:
    tenant = context.current_tenant()
    if tenant is None:
        return PLATFORM_TENANT_ID
    public_id = getattr(tenant, "public_id", None)
    return str(public_id) if public_id is not None else tenant.schema_name


def _lock_chain() -> None:
    """Serialise appends to this schema's chain until the transaction ends."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_advisory_xact_lock(%s, hashtext(current_schema()))", [CHAIN_LOCK_CLASS]
        )


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
    in one schema queue up instead of forking the chain; the lock is released at commit. (The
    tail is read in a statement after the lock's: in READ COMMITTED each statement sees what was
    committed before it started, so it sees the previous holder's event.) Active alert rules are
    checked in the same transaction; their alerts go out after commit.
    """
    if result not in Result.values:
        raise ValueError(f"unknown audit result {result!r}")
    clean = _clean_details(details or {})
    # No savepoint: if recording fails, the caller's change must not commit without its event.
    with transaction.atomic(savepoint=False):
        _lock_chain()
        last = AuditEvent.objects.order_by("-sequence").values_list("sequence", "hash").first()
        if last is None:
            # An emptied log (retention) continues from its checkpoint, not from genesis.
            checkpoints = AuditCheckpoint.objects.order_by("-sequence")
            last = checkpoints.values_list("sequence", "hash").first() or (0, GENESIS_HASH)
        event = AuditEvent(
            tenant_id=current_tenant_id(),
            sequence=last[0] + 1,
            occurred_at=timezone.now(),
            actor_kind=_clean_text(actor.kind, _LIMITS["actor_kind"]),
            actor_id=_clean_text(actor.id, _LIMITS["actor_id"]),
            actor_label=_clean_text(actor.label, _LIMITS["actor_label"]),
            action=_clean_text(action, _LIMITS["action"]),
            resource_type=_clean_text(resource_type, _LIMITS["resource_type"]),
            resource_id=_clean_text(resource_id, _LIMITS["resource_id"]),
            result=result,
            ip=_clean_ip(actor.ip),
            user_agent=_clean_text(actor.user_agent, _LIMITS["user_agent"]),
            details=clean,
            previous_hash=last[1],
        )
        event.hash = compute_hash(event)
        event.save(force_insert=True)
        for alert in rules.evaluate(event):
            _publish_alert(alert)
    return event


def _publish_alert(alert: Alert) -> None:
    tenant = context.current_tenant()
    if tenant is None or getattr(tenant, "public_id", None) is None:
        return  # the platform's log stores alerts; there is no namespace to publish them to
    events.publish_on_commit(tenant, "audit.alert", alert_payload(alert))


def alert_payload(alert: Alert) -> dict[str, Any]:
    return {
        "id": alert.pk,
        "rule": alert.rule.code,
        "rule_name": alert.rule.name,
        "severity": alert.rule.severity,
        "summary": alert.summary,
        "subject": alert.subject,
        "event_sequence": alert.event_sequence,
        "details": alert.details,
        "created_at": alert.created_at.isoformat(),
    }


def emit(
    *,
    actor: Actor,
    action: str,
    resource_type: str = "",
    resource_id: str | int = "",
    details: dict[str, Any] | None = None,
    data: dict[str, Any] | None = None,
    recheck: bool = False,
) -> AuditEvent:
    """Record a successful change and publish it as `action` to the organization's namespace.

    The audit event is written in the caller's transaction; the real-time event goes out only
    after that transaction commits (and never if it rolls back). `data` is the event payload
    (defaults to the audit details). `recheck=True` marks a change that can revoke credentials:
    the organization's open sockets then check theirs again at once (tenants.events).
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
            tenant, action, redact(data if data is not None else details or {}), recheck=recheck
        )
    return event


@contextmanager
def failure_recorded(
    *, actor: Actor, action: str, resource_type: str = "", resource_id: str | int = ""
) -> Iterator[None]:
    """Record a `failed` event if the block raises ValidationError, then re-raise.

    Wrap the service's transaction with it (outside `transaction.atomic()`): the change rolls
    back, the failed event commits on its own.
    """
    try:
        yield
    except ValidationError as error:
        record(
            actor=actor,
            action=action,
            resource_type=resource_type,
            resource_id=resource_id,
            result=Result.FAILED,
            details={"reason": "; ".join(error.messages)[:500]},
        )
        raise


def deny(
    *, actor: Actor, action: str, resource_type: str, resource_id: str | int = "", reason: str
) -> NoReturn:
    """Record a refusal (outside a transaction it commits on its own) and raise
    PermissionDenied with `reason`."""
    record(
        actor=actor,
        action=action,
        resource_type=resource_type,
        resource_id=resource_id,
        result=Result.DENIED,
        details={"reason": reason},
    )
    raise PermissionDenied(reason)


# --- Logins --------------------------------------------------------------------------------------


def login_record(
    *, actor: Actor, email: str, succeeded: bool, method: str = "password"
) -> AuditEvent:
    """Record a login attempt, portal or API, in the organization's log (or the platform's).

    Call it right after authenticating: for a success with `Actor.for_user(user, request)`, for a
    failure with `Actor.anonymous(request)`. The attempted login name is the resource, so the
    failed-logins rule counts attempts per account, existing or not. Never pass the password.
    """
    login = _clean_text(email.strip().lower(), _LIMITS["resource_id"])
    return record(
        actor=actor,
        action="auth.login",
        resource_type="login",
        resource_id=login,
        result=Result.SUCCESS if succeeded else Result.FAILED,
        details={"method": method},
    )


# --- Verification and export ---------------------------------------------------------------------


def audit_log_verify(*, actor: Actor) -> VerifyReport:
    """Verify the current log's chain and record that it was verified (with the outcome)."""
    require_audit_read(actor, "audit.verified")
    report = verify_chain(tenant_id=current_tenant_id())
    record(
        actor=actor,
        action="audit.verified",
        resource_type="audit_log",
        details={
            "intact": report.is_intact,
            "checked": report.checked,
            "broken_sequence": report.broken_sequence,
            "reason": report.reason,
            "head_hash": report.head_hash,
        },
    )
    return report


@dataclass(frozen=True)
class Export:
    """A recorded export request: `chunks()` produces its text lazily, chunk by chunk."""

    format: str
    filters: EventFilters
    through_sequence: int
    filename: str

    @property
    def content_type(self) -> str:
        return exports.FORMATS[self.format][1]

    def chunks(self, chunk_size: int = exports.CHUNK_SIZE) -> Iterator[str]:
        return exports.render(
            self.format, self.filters, through_sequence=self.through_sequence, chunk_size=chunk_size
        )


def audit_log_export(*, actor: Actor, format: str, filters: EventFilters) -> Export:
    """Record an export of the log (it commits before any byte is sent) and describe it.

    The export covers the events up to and including its own record, oldest first.
    """
    if format not in exports.FORMATS:
        raise ValidationError(
            {"format": [f"One of: {', '.join(exports.FORMATS)}."]}, code="invalid_format"
        )
    require_audit_read(actor, "audit.exported")
    try:
        # Fails closed: an export reads the whole log, an unmetered one is a denial of service.
        ratelimit.hit(
            scope="audit_export",
            key=f"{actor.kind}:{actor.id or actor.label}",
            rate=settings.AUDIT_EXPORT_RATE,
            fail_closed=True,
        )
    except ratelimit.RateLimited:
        record(
            actor=actor,
            action="audit.exported",
            resource_type="audit_log",
            result=Result.DENIED,
            details={"reason": "Too many exports.", "format": format},
        )
        raise
    with transaction.atomic():
        event = record(
            actor=actor,
            action="audit.exported",
            resource_type="audit_log",
            details={
                "format": format,
                "filters": filters.as_params(),
                "whole_log": filters.is_empty,
            },
        )
    stamp = event.occurred_at.strftime("%Y%m%dT%H%M%SZ")
    return Export(
        format=format,
        filters=filters,
        through_sequence=event.sequence,
        filename=f"audit-{event.tenant_id}-{stamp}.{exports.FORMATS[format][2]}",
    )


# --- Alert rules ---------------------------------------------------------------------------------


def alert_rule_set_active(*, actor: Actor, rule_id: int, is_active: bool) -> AlertRule:
    """Switch a compliance rule on or off (needs `settings:write`)."""
    action = "audit.rule_enabled" if is_active else "audit.rule_disabled"
    if not actor.can("settings:write"):
        deny(
            actor=actor,
            action=action,
            resource_type="alert_rule",
            resource_id=str(rule_id),
            reason="You cannot change alert rules.",
        )
    with transaction.atomic():
        rule = AlertRule.objects.select_for_update().get(pk=rule_id)
        if rule.is_active == is_active:
            return rule
        rule.is_active = is_active
        rule.updated_at = timezone.now()
        rule.save(update_fields=["is_active", "updated_at"])
        emit(
            actor=actor,
            action=action,
            resource_type="alert_rule",
            resource_id=rule.pk,
            details={"code": rule.code, "name": rule.name},
        )
    return rule


# --- Retention -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RetentionResult:
    removed: int
    through_sequence: int | None
    cutoff: Any


def audit_retention_apply(*, actor: Actor, retention_days: int, now: Any = None) -> RetentionResult:
    """Remove the current log's events older than `retention_days`, keeping it verifiable.

    The removed events are always a prefix of the chain (everything up to the newest event older
    than the cutoff). The table's trigger allows the DELETE only for sequences up to the
    transaction-local `audit.retention_through`; the last removed event's sequence and hash are
    kept as a checkpoint, and the run is recorded as an event that repeats them.
    """
    if actor.kind not in {"system", "staff"}:
        deny(
            actor=actor,
            action=RETENTION_ACTION,
            resource_type="audit_log",
            reason="Only the platform applies retention.",
        )
    if retention_days < 1:
        raise ValidationError({"retention_days": ["At least one day."]})
    now = now or timezone.now()
    cutoff = now - timedelta(days=retention_days)
    with transaction.atomic():
        _lock_chain()
        last = (
            AuditEvent.objects.filter(occurred_at__lt=cutoff)
            .order_by("-sequence")
            .values_list("sequence", "hash")
            .first()
        )
        removed = 0
        if last is not None:
            through, last_hash = last
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT set_config('audit.retention_through', %s, true)", [str(through)]
                )
                cursor.execute("DELETE FROM audit_auditevent WHERE sequence <= %s", [through])
                removed = cursor.rowcount
                cursor.execute("SELECT set_config('audit.retention_through', '', true)")
            AuditCheckpoint.objects.create(
                sequence=through, hash=last_hash, removed_count=removed, created_at=now
            )
        record(
            actor=actor,
            action=RETENTION_ACTION,
            resource_type="audit_log",
            details={
                "retention_days": retention_days,
                "cutoff": cutoff.isoformat(),
                "removed": removed,
                "through_sequence": last[0] if last else None,
                "last_removed_hash": last[1] if last else None,
            },
        )
    through_sequence = last[0] if last else None
    return RetentionResult(removed=removed, through_sequence=through_sequence, cutoff=cutoff)

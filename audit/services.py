"""The one way to record what happened (`record`, `emit`), and every write to the audit app."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, NoReturn

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import DEFAULT_DB_ALIAS, transaction
from django.utils import timezone

from audit import chain, sealing
from audit.models import Alert, AlertRule, AuditEvent, Result
from core import metrics, sql
from core.actors import Actor
from tenants import context, events, residency

if TYPE_CHECKING:
    from tenants.models import Tenant

PLATFORM_TENANT_ID = "platform"
# Both halves of the chain's advisory lock key (kept here for callers; see audit.sealing).
CHAIN_LOCK_CLASS = sealing.CHAIN_LOCK_CLASS
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


# The event's row, as AuditEvent.save() writes it: every column but `id` (which it returns).
# record() builds the values in the model's field order; a test holds the two equal.
_EVENT_COLUMNS = (
    "tenant_id",
    "sequence",
    "occurred_at",
    "actor_kind",
    "actor_id",
    "actor_label",
    "action",
    "resource_type",
    "resource_id",
    "result",
    "ip",
    "user_agent",
    "details",
    "previous_hash",
    "hash",
    "sealed_at",
)
_INSERT_EVENT = (
    "INSERT INTO audit_auditevent (tenant_id, sequence, occurred_at, actor_kind, actor_id,"
    " actor_label, action, resource_type, resource_id, result, ip, user_agent, details,"
    " previous_hash, hash, sealed_at)"
    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id"
)
_RESULTS = frozenset(Result.values)
_RECORD_TIMER = metrics.AUDIT_WRITE.labels("record")


def current_tenant_id() -> str:
    tenant = context.current_tenant()
    if tenant is None:
        return PLATFORM_TENANT_ID
    public_id = getattr(tenant, "public_id", None)
    return str(public_id) if public_id is not None else tenant.schema_name


def lock_chain() -> None:
    """Serialise sealing and retention of this schema's chain until the transaction ends."""
    sealing.lock_chain()


def record(
    *,
    actor: Actor,
    action: str,
    resource_type: str = "",
    resource_id: str | int = "",
    result: str = Result.SUCCESS,
    details: dict[str, Any] | None = None,
) -> AuditEvent:
    """Add one event to the current context's log, in the caller's transaction.

    The event is inserted unsealed (no sequence, no hashes yet) without any lock, so concurrent
    writers of one organization do not queue on each other; after commit the sealer chains it
    in commit order (audit.sealing), and alert rules are checked then. Everything reading the
    chain as a whole seals first. If the transaction rolls back, the event goes with it.
    """
    if result not in _RESULTS:
        raise ValueError(f"unknown audit result {result!r}")
    clean = chain.clean_details(details or {})
    # Every field as the model holds it, in its order: `id` (returned), then _EVENT_COLUMNS.
    values = [
        None,
        current_tenant_id(),
        None,  # sequence: given when sealed
        timezone.now(),
        chain.clean_text(actor.kind, _LIMITS["actor_kind"]),
        chain.clean_text(actor.id, _LIMITS["actor_id"]),
        chain.clean_text(actor.label, _LIMITS["actor_label"]),
        chain.clean_text(action, _LIMITS["action"]),
        chain.clean_text(resource_type, _LIMITS["resource_type"]),
        chain.clean_text(resource_id, _LIMITS["resource_id"]),
        str(result),
        chain.clean_ip(actor.ip),
        chain.clean_text(actor.user_agent, _LIMITS["user_agent"]),
        clean,
        "",  # previous_hash
        "",  # hash
        None,  # sealed_at
    ]
    # No savepoint: if recording fails, the caller's change must not commit without its event.
    with _RECORD_TIMER.time(), transaction.atomic(savepoint=False):
        # One prepared INSERT (core.sql), the row exactly as AuditEvent.save() would write it:
        # the values are cleaned above, `details` is the JSON of what jsonb gives back.
        with sql.cursor() as cursor:
            cursor.execute(_INSERT_EVENT, [*values[1:13], json.dumps(clean), *values[14:]])
            values[0] = cursor.fetchone()[0]
        event = AuditEvent.from_db(DEFAULT_DB_ALIAS, None, values)
        if sealing.mode() == "immediate":
            sealing.seal_now(event)
        else:
            tenant = context.current_tenant()
            transaction.on_commit(lambda: sealing.after_commit(tenant))
    return event


def publish_alert(alert: Alert) -> None:
    """Publish an alert raised while sealing (after the sealing transaction commits)."""
    _publish_alert(alert)


def _publish_alert(alert: Alert) -> None:
    # The platform's log stores alerts too; it has no namespace to publish them to.
    emit(
        actor=Actor.system("audit rules"),
        action=None,
        subject="audit.alert",
        data=alert_payload(alert),
        verbatim=True,
    )


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
    action: str | None,
    subject: str | None = None,
    resource_type: str = "",
    resource_id: str | int = "",
    details: dict[str, Any] | None = None,
    data: dict[str, Any] | None = None,
    verbatim: bool = False,
    recheck: bool = False,
) -> AuditEvent | None:
    """The one change-event path: record `action` in the audit log and publish on `subject`.

    The audit event is written in the caller's transaction; the real-time event goes to the
    organization's namespace only after that transaction commits (never if it rolls back).
    `subject` defaults to the action's name. `action=None` publishes without recording, for
    events that are not changes worth a log row (heartbeat metrics, alerts of a recorded event).
    `data` is the payload (default: the audit details), redacted like audit details unless
    `verbatim` (a task or a metric: the organization's own message, delivered as sent).
    `recheck=True` marks a change that can revoke credentials: the organization's open sockets
    then check theirs again at once (tenants.events).
    """
    if action is None and subject is None:
        raise ValueError("emit needs an action to record or a subject to publish on")
    event = None
    if action is not None:
        event = record(
            actor=actor,
            action=action,
            resource_type=resource_type,
            resource_id=resource_id,
            details=details,
        )
    tenant = context.current_tenant()
    if tenant is not None:
        payload = data if data is not None else details or {}
        events.publish_on_commit(
            tenant,
            subject or str(action),
            payload if verbatim else chain.redact(payload),
            recheck=recheck,
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


def record_in_both_logs(
    *,
    actor: Actor,
    tenant: Tenant,
    action: str,
    resource_type: str,
    resource_id: str,
    details: dict,
) -> None:
    """A platform action on an organization: in the platform's log and in the organization's
    own, so that it sees what was done to it. Runs in the caller's transaction."""
    for enter in (context.public_context, lambda: context.tenant_context(tenant)):
        with enter():
            record(
                actor=actor,
                action=action,
                resource_type=resource_type,
                resource_id=resource_id,
                details=details,
            )


def require(
    actor: Actor, permission: str, *, action: str, resource_type: str, resource_id: str | int = ""
) -> None:
    """Refuse (recorded, then PermissionDenied) unless `actor` holds `permission`."""
    if not actor.can(permission):
        deny(
            actor=actor,
            action=action,
            resource_type=resource_type,
            resource_id=resource_id,
            reason=f"This needs the “{permission}” permission.",
        )


def require_staff(
    actor: Actor, action: str, resource_type: str, resource_id: str | int = ""
) -> None:
    """Refuse anyone but platform staff and the system; the refusal goes to the platform's log."""
    if actor.kind in {"staff", "system"}:
        return
    with context.public_context():
        deny(
            actor=actor,
            action=action,
            resource_type=resource_type,
            resource_id=resource_id,
            reason="Only platform staff can do this.",
        )


def residency_refusal_record(
    *,
    actor: Actor,
    tenant: Tenant | None,
    violation: residency.ResidencyViolation,
    subject: str = "",
) -> None:
    """Record a placement refused by tenants.residency: in the platform's log, and in the
    organization's own when there is one. Registered with tenants.residency (audit.apps)."""
    details = residency.refusal_details(violation, subject)
    resource_id = str(tenant.public_id) if tenant is not None else subject
    logs = [context.public_context]
    if tenant is not None:
        logs.append(lambda: context.tenant_context(tenant))
    for enter in logs:
        with enter():
            record(
                actor=actor,
                action="residency.refused",
                resource_type="organization",
                resource_id=resource_id,
                result=Result.DENIED,
                details=details,
            )


# --- Logins --------------------------------------------------------------------------------------


def login_record(
    *, actor: Actor, email: str, succeeded: bool, method: str = "password"
) -> AuditEvent:
    """Record a login attempt, portal or API, in the organization's log (or the platform's).

    Call it right after authenticating: for a success with `Actor.for_user(user, request)`, for a
    failure with `Actor.anonymous(request)`. The attempted login name is the resource, so the
    failed-logins rule counts attempts per account, existing or not. Never pass the password.
    """
    login = chain.clean_text(email.strip().lower(), _LIMITS["resource_id"])
    return record(
        actor=actor,
        action="auth.login",
        resource_type="login",
        resource_id=login,
        result=Result.SUCCESS if succeeded else Result.FAILED,
        details={"method": method},
    )


# --- Alert rules ---------------------------------------------------------------------------------


def alert_acknowledge(*, actor: Actor, alert_id: int) -> Alert:
    """Mark an alert as seen and handled (needs `audit:read`, like reading it); recorded. An
    alert already acknowledged keeps its first acknowledgement. Alert.DoesNotExist if none."""
    if not actor.can("audit:read"):
        deny(
            actor=actor,
            action="audit.alert_acknowledged",
            resource_type="alert",
            reason="You cannot read the audit log.",
        )
    with transaction.atomic():
        alert = Alert.objects.select_for_update().get(pk=alert_id)
        if alert.acknowledged_at is not None:
            return alert
        alert.acknowledged_at = timezone.now()
        alert.acknowledged_by = actor.label
        alert.save(update_fields=["acknowledged_at", "acknowledged_by"])
        record(
            actor=actor,
            action="audit.alert_acknowledged",
            resource_type="alert",
            resource_id=alert.pk,
            details={"rule": alert.rule.name, "event": alert.event_sequence},
        )
    return alert


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

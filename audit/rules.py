"""Compliance alert rules: what each rule (by `AlertRule.code`) looks for in a recorded event.

The rules an organization has, and whether each is on, are data (`AlertRule` rows in its schema);
the logic is here. `evaluate` runs inside `audit.services.record`, in the recording transaction,
and costs nothing for actions no rule watches (no query at all).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.db.models import IntegerField, Sum
from django.db.models.fields.json import KT
from django.db.models.functions import Cast, Coalesce

from audit.models import Alert, AlertRule, AuditEvent, Result
from core.roles import delegable_scopes


@dataclass(frozen=True)
class Match:
    """Why a rule fired, about what (`subject`, used to avoid repeating an alert)."""

    subject: str
    summary: str
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Rule:
    code: str
    actions: frozenset[str]
    check: Callable[[AuditEvent, dict[str, Any]], Match | None]


def _failed_logins(event: AuditEvent, parameters: dict[str, Any]) -> Match | None:
    if event.result != Result.FAILED or not event.resource_id:
        return None
    threshold = int(parameters.get("threshold", 5))
    window = timedelta(seconds=int(parameters.get("window_seconds", 300)))
    # Uses audit_res_idx: (resource_type, resource_id, -sequence), bounded by the window.
    # Failures are recorded aggregated (audit.failures): a row stands for `count` of them.
    failures = AuditEvent.objects.filter(
        resource_type="login",
        resource_id=event.resource_id,
        action=event.action,
        result=Result.FAILED,
        occurred_at__gt=event.occurred_at - window,
        sequence__lte=event.sequence,
    ).aggregate(total=Coalesce(Sum(Coalesce(Cast(KT("details__count"), IntegerField()), 1)), 0))[
        "total"
    ]
    if failures < threshold:
        return None
    minutes = window.total_seconds() / 60
    return Match(
        subject=event.resource_id,
        summary=f"{failures} failed logins for {event.resource_id} within {minutes:g} minutes",
        details={"failures": failures, "window_seconds": int(window.total_seconds())},
    )


def _api_key_every_scope(event: AuditEvent, parameters: dict[str, Any]) -> Match | None:
    if event.result != Result.SUCCESS:
        return None
    scopes = event.details.get("scopes")
    if not isinstance(scopes, list):
        return None
    granted = {str(scope) for scope in scopes}
    if "*" not in granted and not delegable_scopes() <= granted:
        return None
    name = event.details.get("name") or event.resource_id
    return Match(
        subject=event.resource_id,
        summary=f"API key “{name}” was created with every scope by {event.actor_label}",
        details={"api_key": event.resource_id, "scopes": sorted(granted)},
    )


def _member_promoted_owner(event: AuditEvent, parameters: dict[str, Any]) -> Match | None:
    if event.result != Result.SUCCESS or event.details.get("to") != "owner":
        return None
    who = event.details.get("email") or event.resource_id
    return Match(
        subject=event.resource_id,
        summary=f"{who} was promoted to owner by {event.actor_label or event.actor_kind}",
        details={"user": event.resource_id, "from": event.details.get("from")},
    )


def _full_log_export(event: AuditEvent, parameters: dict[str, Any]) -> Match | None:
    if event.result != Result.SUCCESS or not event.details.get("whole_log"):
        return None
    return Match(
        subject=event.actor_id or event.actor_label,
        summary=(
            f"The whole audit log was exported ({event.details.get('format')}) "
            f"by {event.actor_label or event.actor_kind}"
        ),
        details={"format": event.details.get("format")},
    )


RULES: dict[str, Rule] = {
    rule.code: rule
    for rule in [
        Rule("failed-logins", frozenset({"auth.login"}), _failed_logins),
        Rule("api-key-every-scope", frozenset({"api_key.created"}), _api_key_every_scope),
        Rule("member-promoted-owner", frozenset({"member.role_changed"}), _member_promoted_owner),
        Rule("full-log-export", frozenset({"audit.exported"}), _full_log_export),
    ]
}
WATCHED_ACTIONS: frozenset[str] = frozenset().union(*(rule.actions for rule in RULES.values()))


def evaluate(event: AuditEvent) -> list[Alert]:
    """Store an alert for every active rule `event` matches; returns the new alerts.

    A rule with a window that already alerted on the same subject within it stays quiet: a brute
    force gives one alert per window, not one per attempt. Rules without a window alert on every
    match.
    """
    if event.action not in WATCHED_ACTIONS:
        return []
    codes = [code for code, rule in RULES.items() if event.action in rule.actions]
    alerts = []
    for stored in AlertRule.objects.filter(code__in=codes, is_active=True):
        match = RULES[stored.code].check(event, stored.parameters or {})
        if match is None:
            continue
        window = stored.parameters.get("window_seconds") if stored.parameters else None
        if window:
            recent = Alert.objects.filter(
                rule=stored,
                subject=match.subject,
                created_at__gt=event.occurred_at - timedelta(seconds=int(window)),
            )
            if recent.exists():
                continue
        alerts.append(
            Alert.objects.create(
                rule=stored,
                event_sequence=event.sequence,
                subject=match.subject[:254],
                summary=match.summary[:255],
                details=match.details,
                created_at=event.occurred_at,
            )
        )
    return alerts

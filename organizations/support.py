"""Staff support sessions: the one way platform staff see an organization's data.

Staff open a session from the admin, for a stated reason and at most four hours; the admin hands
the browser a signed, single-use token (accounts.handoff, purpose `support`) that the
organization's host redeems into a session of its own. There the staff member is a
`SupportPrincipal`, not a user of the organization: read-only (a viewer's permissions, GET and
HEAD only), no API and no WebSocket, and every request is recorded in the platform's and the
organization's audit log with the staff identity (organizations.middleware). Every member sees a
banner naming who and until when; the owner, or the staff member, ends it at once, and the clock
ends it at `until`. Each request of the session re-reads its row, so an end is seen at the next.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.db import transaction
from django.http import HttpRequest
from django.utils import timezone

from accounts.handoff import HandoffRefused, handoff_token_make, handoff_token_redeem
from audit import services as audit
from core.actors import Actor, request_meta
from core.roles import SUPPORT_END, Role, permissions_for
from tenants import context
from tenants.models import SupportSession, Tenant, TenantStatus

logger = logging.getLogger(__name__)

PURPOSE = "support"
# Where the organization's host keeps the session's id (no user id: nobody is signed in).
SESSION_KEY = "organizations.support_session"
DURATIONS = {15: "15 minutes", 30: "30 minutes", 60: "1 hour", 120: "2 hours", 240: "4 hours"}
DEFAULT_MINUTES = 60
REASON_MAX_LENGTH = 500
# Read-only: what a viewer reads, nothing more (no audit log, billing, keys or secrets).
PERMISSIONS = permissions_for(Role.VIEWER)
# The banner's list of open sessions, per organization (dropped when one opens or ends).
ACTIVE_CACHE_SECONDS = 60


@dataclass(frozen=True)
class ActiveSession:
    """What the banner says of an open session."""

    id: int
    staff: str
    reason: str
    until: datetime


class SupportPrincipal:
    """`request.user` on the organization's host during a support session: the staff member,
    as nobody of the organization. Templates read it like a user (name, email, role)."""

    is_authenticated = True
    is_anonymous = False
    is_active = True
    is_staff = False
    is_superuser = False
    is_support = True
    # Their second factor is the staff sign-in's (STAFF_REQUIRE_TWO_FACTOR): the organization's
    # setup page is not theirs. An organization that requires two-factor authentication gets
    # no session from a staff account without it (support_session_open).
    two_factor_enabled = True
    role = "support"
    pk = None
    id = None

    def __init__(self, session: SupportSession) -> None:
        self.session = session
        self.session_id = session.pk
        self.email = session.staff_email
        self.full_name = session.staff_name

    def __str__(self) -> str:
        return f"{self.email} (platform support)"

    def get_full_name(self) -> str:
        return self.full_name or self.email

    def get_role_display(self) -> str:
        return "Platform support (read-only)"

    def can(self, permission: str) -> bool:
        return permission in PERMISSIONS

    def actor(self, request: HttpRequest | None = None) -> Actor:
        """The audit actor: kind `support`, the staff account's id and email."""
        return Actor(
            kind="support",
            id=str(self.session.staff_id or ""),
            label=self.email,
            role=self.role,
            permissions=PERMISSIONS,
            user=self,
            **request_meta(request),
        )


def _details(session: SupportSession, **more: Any) -> dict[str, Any]:
    # The session's id is the event's resource_id (a "session" key would be redacted).
    return {
        "staff": session.staff_email,
        "reason": session.reason,
        "until": session.until.isoformat(),
        **more,
    }


def _cache_key(tenant: Tenant) -> str:
    return f"support:active:{tenant.public_id}"


def _forget_active(tenant: Tenant) -> None:
    try:
        cache.delete(_cache_key(tenant))
    except Exception:
        # The banner may then lag by ACTIVE_CACHE_SECONDS; access itself never reads the cache.
        logger.warning("could not drop the cached support sessions of %s", tenant.slug)


def _forget_active_on_commit(tenant: Tenant) -> None:
    _forget_active(tenant)
    transaction.on_commit(lambda: _forget_active(tenant))


# --- Writes ---------------------------------------------------------------------------------------


def support_session_open(
    *, actor: Actor, tenant: Tenant, reason: str, minutes: int = DEFAULT_MINUTES
) -> SupportSession:
    """A staff member opens a support session into `tenant` for `minutes` (one of DURATIONS).

    The reason is mandatory. Recorded in the platform's log and the organization's, with the
    reason and the end time. Only a staff person (not the system) may open one.
    """
    action = "support.session_opened"
    if actor.kind != "staff" or actor.user is None:
        with context.public_context():
            audit.deny(
                actor=actor,
                action=action,
                resource_type="organization",
                resource_id=str(tenant.public_id),
                reason="Only platform staff can open a support session.",
            )
    reason = " ".join(str(reason or "").split())
    errors: dict[str, list[str]] = {}
    if not reason:
        errors["reason"] = ["Say why you need to see the organization's data."]
    elif len(reason) > REASON_MAX_LENGTH:
        errors["reason"] = [f"At most {REASON_MAX_LENGTH} characters."]
    if minutes not in DURATIONS:
        errors["minutes"] = [f"Choose one of: {', '.join(DURATIONS.values())}."]
    if errors:
        raise ValidationError(errors)
    now = timezone.now()
    with context.public_context(), transaction.atomic():
        current = Tenant.objects.select_for_update().get(pk=tenant.pk)
        if current.status != TenantStatus.ACTIVE:
            raise ValidationError(
                {"__all__": [f"{current.name} is {current.get_status_display().lower()}."]}
            )
        if current.require_two_factor and not actor.user.two_factor_enabled:
            raise ValidationError(
                {
                    "__all__": [
                        f"{current.name} requires two-factor authentication: set it up for "
                        "your staff account first (Two-factor authentication, top of the admin)."
                    ]
                }
            )
        session = SupportSession.objects.create(
            tenant=current,
            staff=actor.user,
            staff_email=actor.label,
            staff_name=getattr(actor.user, "full_name", ""),
            reason=reason,
            started_at=now,
            until=now + timedelta(minutes=minutes),
        )
        audit.record_in_both_logs(
            actor=actor,
            tenant=current,
            action=action,
            resource_type="support_session",
            resource_id=str(session.pk),
            details=_details(session, minutes=minutes),
        )
        _forget_active_on_commit(current)
    return session


def support_session_end(*, actor: Actor, tenant: Tenant, session_id: int) -> SupportSession:
    """End a support session of `tenant` now: its owner (`support:end`), the staff member of the
    session itself, or platform staff. SupportSession.DoesNotExist for another organization's.

    Recorded in both logs; a session already over is returned unchanged.
    """
    action = "support.session_ended"
    with context.public_context():
        found = SupportSession.objects.filter(pk=session_id, tenant_id=tenant.pk).first()
    if found is None:
        raise SupportSession.DoesNotExist
    is_its_own = actor.kind == "support" and getattr(actor.user, "session_id", None) == found.pk
    if actor.kind != "staff" and not is_its_own:
        audit.require(
            actor,
            SUPPORT_END,
            action=action,
            resource_type="support_session",
            resource_id=str(found.pk),
        )
    now = timezone.now()
    with context.public_context(), transaction.atomic():
        session = SupportSession.objects.select_for_update().get(pk=found.pk)
        if not session.is_open_at(now):
            return session
        session.ended_at = now
        session.ended_by = actor.label
        session.save(update_fields=["ended_at", "ended_by"])
        audit.record_in_both_logs(
            actor=actor,
            tenant=tenant,
            action=action,
            resource_type="support_session",
            resource_id=str(session.pk),
            details=_details(session, ended_by=actor.label),
        )
        _forget_active_on_commit(tenant)
    return session


def support_token_make(*, session: SupportSession) -> str:
    """The hand-off token for an open session: 60 seconds, once, on its organization's host."""
    return handoff_token_make(tenant=session.tenant, user_id=session.pk, purpose=PURPOSE)


def support_session_join(*, tenant: Tenant, token: str, request: HttpRequest) -> SupportSession:
    """Redeem a hand-off token on `tenant`'s host: the open session it names, recorded in both
    logs. HandoffRefused for a bad, used, expired or foreign token, or a session that is over."""
    session = support_session_current(
        tenant=tenant, session_id=handoff_token_redeem(tenant=tenant, token=token, purpose=PURPOSE)
    )
    if session is None:
        raise HandoffRefused("the support session is over")
    with transaction.atomic():
        audit.record_in_both_logs(
            actor=SupportPrincipal(session).actor(request),
            tenant=tenant,
            action="support.session_joined",
            resource_type="support_session",
            resource_id=str(session.pk),
            details=_details(session),
        )
    return session


def support_request_record(
    *, request: HttpRequest, principal: SupportPrincipal, status: int, refused: bool
) -> None:
    """One request of a support session, in both logs (organizations.middleware)."""
    with transaction.atomic():
        audit.record_in_both_logs(
            actor=principal.actor(request),
            tenant=request.tenant,
            action="support.request",
            resource_type="support_session",
            resource_id=str(principal.session_id),
            details={
                "method": request.method,
                "path": request.path[:500],
                "status": status,
                "refused": refused,
            },
        )


# --- Reads ----------------------------------------------------------------------------------------


def support_session_current(*, tenant: Tenant, session_id: Any) -> SupportSession | None:
    """The open session `session_id` of `tenant` whose staff account is still active staff, or
    None (ended, expired, another organization's, or its staff member was deactivated)."""
    if not isinstance(session_id, int):
        return None
    with context.public_context():
        return (
            SupportSession.objects.select_related("tenant")
            .filter(
                pk=session_id,
                tenant_id=tenant.pk,
                ended_at__isnull=True,
                until__gt=timezone.now(),
                staff__is_active=True,
                staff__is_staff=True,
            )
            .first()
        )


def support_sessions_active(tenant: Tenant) -> list[ActiveSession]:
    """The organization's open sessions, for the banner: cached (no query on most pages), the
    expired ones dropped at read time."""
    key = _cache_key(tenant)
    try:
        rows = cache.get(key)
    except Exception:
        logger.warning("support sessions cache unavailable; read from the database")
        rows = None
    if rows is None:
        with context.public_context():
            rows = [
                ActiveSession(
                    id=session.pk,
                    staff=session.staff_display,
                    reason=session.reason,
                    until=session.until,
                )
                for session in SupportSession.objects.filter(
                    tenant_id=tenant.pk, ended_at__isnull=True, until__gt=timezone.now()
                ).order_by("until")
            ]
        try:
            cache.set(key, rows, ACTIVE_CACHE_SECONDS)
        except Exception:
            logger.warning("support sessions cache unavailable; not cached")
    now = timezone.now()
    return [row for row in rows if row.until > now]

"""Reads about people in the current organization: members, counts, pending invitations."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.contrib.sessions.models import Session
from django.db.models import QuerySet
from django.utils import timezone

from accounts.models import Invitation, RecoveryCode, User
from core.actors import Actor


def member_list() -> QuerySet[User]:
    """Everyone in the organization, active members first, then by email."""
    return User.objects.order_by("-is_active", "email")


def member_count() -> int:
    return User.objects.filter(is_active=True).count()


def member_get_active(*, user_id: int) -> User | None:
    """The active member with this id in the current organization, or None."""
    return User.objects.filter(pk=user_id, is_active=True).first()


def member_get_active_by_email(*, email: str) -> User | None:
    return User.objects.filter(email=email.strip().lower(), is_active=True).first()


def invitation_list_pending() -> QuerySet[Invitation]:
    """Invitations not yet accepted, revoked or expired, newest first, with who sent them."""
    return Invitation.objects.filter(
        accepted_at__isnull=True, revoked_at__isnull=True, expires_at__gt=timezone.now()
    ).select_related("invited_by")


def invitation_pending_count() -> int:
    return invitation_list_pending().count()


@dataclass(frozen=True)
class SessionEntry:
    """One signed-in browser of a user: its key (never shown), what the session remembers."""

    key: str
    expires_at: Any
    signed_in_at: str
    user_agent: str
    ip: str


# Set into the session by accounts.middleware on its first signed-in request.
SESSION_META_KEY = "accounts.meta"


def session_list(*, actor: Actor) -> list[SessionEntry]:
    """The acting user's unexpired sessions in this organization, newest first.

    Sessions are decoded one by one: this schema holds only this organization's sessions, and
    expired ones are cleared (`clearsessions`).
    """
    if actor.kind not in {"user", "staff"} or not actor.id:
        return []
    found = []
    for session, data in _sessions_of(actor.id):
        meta = data.get(SESSION_META_KEY) or {}
        found.append(
            SessionEntry(
                key=session.session_key,
                expires_at=session.expire_date,
                signed_in_at=str(meta.get("since", "")),
                user_agent=str(meta.get("agent", ""))[:200],
                ip=str(meta.get("ip", "")),
            )
        )
    return sorted(found, key=lambda entry: entry.signed_in_at, reverse=True)


def _sessions_of(user_id: int | str):
    for session in Session.objects.filter(expire_date__gt=timezone.now()):
        data = session.get_decoded()
        if str(data.get("_auth_user_id")) == str(user_id):
            yield session, data


def session_keys_of(*, user_id: int) -> list[str]:
    """The keys of every unexpired session of the user `user_id` in this schema."""
    return [session.session_key for session, _ in _sessions_of(user_id)]


def recovery_codes_remaining(*, user_id: int) -> int:
    """How many of the user's recovery codes are still unused."""
    return RecoveryCode.objects.filter(user_id=user_id, used_at__isnull=True).count()

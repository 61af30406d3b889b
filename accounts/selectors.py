"""Reads about people in the current organization: members, counts, pending invitations."""

from __future__ import annotations

from django.db.models import QuerySet
from django.utils import timezone

from accounts.models import Invitation, User


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

"""Every write to people: users, invitations, roles, deactivation."""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta

from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.validators import validate_email
from django.db import transaction
from django.utils import timezone

from accounts.models import Invitation, User
from audit import services as audit
from core.actors import Actor
from core.roles import RANK, Role

INVITATION_LIFETIME = timedelta(days=7)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def user_create(*, actor: Actor, email: str, password: str, role: str, full_name: str = "") -> User:
    """Create a user in the current organization (used by provisioning and invitations)."""
    email = email.strip().lower()
    validate_email(email)
    if role not in Role.values:
        raise ValidationError({"role": [f"Unknown role “{role}”."]})
    candidate = User(email=email, full_name=full_name, role=role)
    validate_password(password, candidate)
    with transaction.atomic():
        if User.objects.filter(email=email).exists():
            raise ValidationError({"email": ["A user with this email already exists."]})
        candidate.set_password(password)
        candidate.save()
        audit.emit(
            actor=actor,
            action="member.created",
            resource_type="user",
            resource_id=candidate.pk,
            details={"email": email, "role": role},
        )
    return candidate


def _check_may_assign(actor: Actor, role: str, action: str, resource_id: str) -> None:
    if role not in Role.values:
        raise ValidationError({"role": [f"Unknown role “{role}”."]})
    if role == Role.OWNER and not actor.can("members:grant_owner"):
        audit.deny(
            actor=actor,
            action=action,
            resource_type="user",
            resource_id=resource_id,
            reason="Only an owner can grant the owner role.",
        )


def invitation_create(*, actor: Actor, email: str, role: str) -> tuple[Invitation, str]:
    """Invite `email` with `role`. Returns the invitation and its one-time token (for the link)."""
    if not actor.can("members:invite"):
        audit.deny(
            actor=actor,
            action="invitation.created",
            resource_type="invitation",
            reason="You cannot invite members.",
        )
    email = email.strip().lower()
    try:
        validate_email(email)
    except ValidationError as error:
        raise ValidationError({"email": error.messages}) from error
    _check_may_assign(actor, role, "invitation.created", "")
    if User.objects.filter(email=email, is_active=True).exists():
        raise ValidationError({"email": ["This person is already a member."]})
    token = secrets.token_urlsafe(32)
    now = timezone.now()
    with transaction.atomic():
        # A new invitation replaces the pending ones for the same address.
        Invitation.objects.filter(
            email=email, accepted_at__isnull=True, revoked_at__isnull=True
        ).update(revoked_at=now)
        invitation = Invitation.objects.create(
            email=email,
            role=role,
            token_hash=hash_token(token),
            invited_by=actor.user,
            created_at=now,
            expires_at=now + INVITATION_LIFETIME,
        )
        audit.emit(
            actor=actor,
            action="invitation.created",
            resource_type="invitation",
            resource_id=invitation.pk,
            details={"email": email, "role": role},
        )
    return invitation, token


def invitation_get_pending(*, token: str) -> Invitation | None:
    invitation = Invitation.objects.filter(token_hash=hash_token(token)).first()
    if invitation is None or not invitation.is_pending:
        return None
    return invitation


def invitation_accept(*, actor: Actor, token: str, password: str, full_name: str = "") -> User:
    """Turn a pending invitation into a user. Works once, within 7 days."""
    with transaction.atomic():
        invitation = (
            Invitation.objects.select_for_update().filter(token_hash=hash_token(token)).first()
        )
        if invitation is None or not invitation.is_pending:
            raise ValidationError(
                "This invitation link is invalid, used or expired.", code="invitation_invalid"
            )
        existing = User.objects.filter(email=invitation.email).first()
        if existing is not None:
            if existing.is_active:
                raise ValidationError("This person is already a member.", code="already_member")
            # Re-inviting a deactivated member brings the same account back.
            validate_password(password, existing)
            existing.set_password(password)
            existing.role = invitation.role
            existing.is_active = True
            existing.full_name = full_name or existing.full_name
            existing.save(update_fields=["password", "role", "is_active", "full_name"])
            user = existing
            audit.emit(
                actor=actor,
                action="member.reactivated",
                resource_type="user",
                resource_id=user.pk,
                details={"email": user.email, "role": user.role},
                recheck=True,  # credentials cached while the member was inactive are reloaded
            )
        else:
            user = user_create(
                actor=actor,
                email=invitation.email,
                password=password,
                role=invitation.role,
                full_name=full_name,
            )
        invitation.accepted_at = timezone.now()
        invitation.save(update_fields=["accepted_at"])
        audit.emit(
            actor=actor,
            action="invitation.accepted",
            resource_type="invitation",
            resource_id=invitation.pk,
            details={"email": invitation.email},
        )
    return user


def invitation_revoke(*, actor: Actor, invitation_id: int) -> None:
    if not actor.can("members:invite"):
        audit.deny(
            actor=actor,
            action="invitation.revoked",
            resource_type="invitation",
            resource_id=str(invitation_id),
            reason="You cannot manage invitations.",
        )
    with transaction.atomic():
        invitation = Invitation.objects.select_for_update().filter(pk=invitation_id).first()
        if invitation is None or not invitation.is_pending:
            raise Invitation.DoesNotExist
        invitation.revoked_at = timezone.now()
        invitation.save(update_fields=["revoked_at"])
        audit.emit(
            actor=actor,
            action="invitation.revoked",
            resource_type="invitation",
            resource_id=invitation.pk,
            details={"email": invitation.email},
        )


def invitation_resend(*, actor: Actor, invitation_id: int) -> tuple[Invitation, str]:
    """Send a pending invitation again: a new link (the old one stops working) valid for a new
    7 days. Returns the invitation and its new one-time token. Invitation.DoesNotExist if it is
    not pending (accepted, revoked or expired invitations are invited anew instead)."""
    if not actor.can("members:invite"):
        audit.deny(
            actor=actor,
            action="invitation.resent",
            resource_type="invitation",
            resource_id=str(invitation_id),
            reason="You cannot manage invitations.",
        )
    token = secrets.token_urlsafe(32)
    now = timezone.now()
    with transaction.atomic():
        invitation = Invitation.objects.select_for_update().filter(pk=invitation_id).first()
        if invitation is None or not invitation.is_pending:
            raise Invitation.DoesNotExist
        _check_may_assign(actor, invitation.role, "invitation.resent", str(invitation.pk))
        invitation.token_hash = hash_token(token)
        invitation.expires_at = now + INVITATION_LIFETIME
        invitation.save(update_fields=["token_hash", "expires_at"])
        audit.emit(
            actor=actor,
            action="invitation.resent",
            resource_type="invitation",
            resource_id=invitation.pk,
            details={"email": invitation.email, "expires_at": invitation.expires_at.isoformat()},
        )
    return invitation, token


def _refusal(actor: Actor, user: User) -> str | None:
    """Why `actor` may not change `user`'s membership, or None."""
    if actor.kind == "system":
        return None
    if not actor.can("members:manage"):
        return "You cannot manage members."
    if str(user.pk) == actor.id:
        return "You cannot change your own membership."
    if RANK[user.role] > RANK[actor.role] or (
        user.role == Role.OWNER and not actor.can("members:grant_owner")
    ):
        return "Only an owner can change an owner."
    return None


def member_is_manageable_by(*, actor: Actor, user: User) -> bool:
    """Whether `actor` may change `user`'s role or deactivate them (interfaces show controls)."""
    return user.is_active and _refusal(actor, user) is None


def roles_assignable_by(*, actor: Actor) -> list[str]:
    """The roles `actor` may grant by invitation or role change (owner only by an owner)."""
    if not actor.can("members:manage"):
        return []
    return [role for role in Role.values if role != Role.OWNER or actor.can("members:grant_owner")]


def _check_member(actor: Actor, user_id: int, action: str) -> User:
    """Check, before any transaction, that `actor` may change the member; record a refusal.

    Outside the transaction so the denied event commits even though no change does; the check
    runs again under the row lock (`_relock`) against a concurrent change.
    """
    user = User.objects.filter(pk=user_id).first()
    if user is None:
        raise User.DoesNotExist
    reason = _refusal(actor, user)
    if reason:
        audit.deny(
            actor=actor,
            action=action,
            resource_type="user",
            resource_id=str(user_id),
            reason=reason,
        )
    return user


def _relock(actor: Actor, user_id: int) -> User:
    user = User.objects.select_for_update().get(pk=user_id)
    reason = _refusal(actor, user)
    if reason:
        raise PermissionDenied(reason)
    return user


def _ensure_an_owner_remains() -> None:
    if not User.objects.filter(role=Role.OWNER, is_active=True).exists():
        raise ValidationError(
            "The organization must keep at least one active owner.", code="last_owner"
        )


def member_change_role(*, actor: Actor, user_id: int, role: str) -> User:
    _check_member(actor, user_id, "member.role_changed")
    _check_may_assign(actor, role, "member.role_changed", str(user_id))
    with (
        audit.failure_recorded(
            actor=actor, action="member.role_changed", resource_type="user", resource_id=user_id
        ),
        transaction.atomic(),
    ):
        user = _relock(actor, user_id)
        previous = user.role
        if previous == role:
            return user
        user.role = role
        user.save(update_fields=["role"])
        _ensure_an_owner_remains()
        audit.emit(
            actor=actor,
            action="member.role_changed",
            resource_type="user",
            resource_id=user.pk,
            details={"email": user.email, "from": previous, "to": role},
            recheck=True,  # open sockets of the member (and of their keys) take it at once
        )
    return user


def member_deactivate(*, actor: Actor, user_id: int) -> User:
    """Deactivate a member: their sessions stop working at their next request."""
    _check_member(actor, user_id, "member.deactivated")
    with (
        audit.failure_recorded(
            actor=actor, action="member.deactivated", resource_type="user", resource_id=user_id
        ),
        transaction.atomic(),
    ):
        user = _relock(actor, user_id)
        if not user.is_active:
            return user
        user.is_active = False
        user.save(update_fields=["is_active"])
        _ensure_an_owner_remains()
        audit.emit(
            actor=actor,
            action="member.deactivated",
            resource_type="user",
            resource_id=user.pk,
            details={"email": user.email},
            recheck=True,  # open sockets of the member (and of their keys) close at once
        )
    return user


def staff_user_create(*, actor: Actor, email: str, password: str) -> User:
    """Create a platform staff account (public schema), who logs into Django admin."""
    from tenants import context

    with context.public_context(), transaction.atomic():
        user = User.objects.create_superuser(email=email.strip().lower(), password=password)
        audit.record(
            actor=actor,
            action="staff.created",
            resource_type="user",
            resource_id=user.pk,
            details={"email": user.email},
        )
    return user


# --- The signed-in person's own account ----------------------------------------------------------

MAX_FULL_NAME_LENGTH = 150


def _own_user_id(actor: Actor) -> int:
    """The acting person's own user id: an API key or the system has no account to change."""
    if actor.kind != "user" or not actor.id:
        raise PermissionDenied("Only a signed-in person can change their own account.")
    return int(actor.id)


def profile_update(*, actor: Actor, full_name: object) -> User:
    """Change the acting user's own display name (what menus and the audit trail show)."""
    audit.require(actor, "org:read", action="user.profile_changed", resource_type="user")
    if not isinstance(full_name, str) or len(full_name.strip()) > MAX_FULL_NAME_LENGTH:
        raise ValidationError(
            {"full_name": [f"At most {MAX_FULL_NAME_LENGTH} characters."]}, code="max_length"
        )
    full_name = " ".join(full_name.split())
    with transaction.atomic():
        user = User.objects.select_for_update().get(pk=_own_user_id(actor))
        if user.full_name == full_name:
            return user
        user.full_name = full_name
        user.save(update_fields=["full_name"])
        audit.emit(
            actor=actor,
            action="user.profile_changed",
            resource_type="user",
            resource_id=user.pk,
            details={"changed": ["full_name"]},
        )
    return user


def password_change(*, actor: Actor, current_password: str, new_password: str) -> User:
    """The acting user changes their own password, proving the current one. Every other session
    of theirs ends (Django checks each session's password hash); the caller keeps its own."""
    audit.require(actor, "org:read", action="user.password_changed", resource_type="user")
    with transaction.atomic():
        user = User.objects.select_for_update().get(pk=_own_user_id(actor))
        if not user.check_password(current_password):
            raise ValidationError(
                {"current_password": ["That is not your current password."]}, code="invalid"
            )
        try:
            validate_password(new_password, user)
        except ValidationError as error:
            raise ValidationError({"new_password": error.error_list}) from error
        user.set_password(new_password)
        user.save(update_fields=["password"])
        audit.emit(
            actor=actor, action="user.password_changed", resource_type="user", resource_id=user.pk
        )
    return user


def sessions_end_others(*, actor: Actor, keep_session_key: str) -> int:
    """Sign the acting user out everywhere but the session `keep_session_key`; returns how many
    sessions ended."""
    from django.contrib.sessions.models import Session

    from accounts import selectors

    audit.require(actor, "org:read", action="user.sessions_ended", resource_type="user")
    with transaction.atomic():
        others = [
            entry.key
            for entry in selectors.session_list(actor=actor)
            if entry.key != keep_session_key
        ]
        ended, _ = Session.objects.filter(session_key__in=others).delete()
        audit.emit(
            actor=actor,
            action="user.sessions_ended",
            resource_type="user",
            resource_id=_own_user_id(actor),
            details={"ended": ended},
        )
    return ended

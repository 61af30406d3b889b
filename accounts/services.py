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

from accounts import two_factor
from accounts.models import Invitation, RecoveryCode, TotpDevice, User
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
            # A fresh start: the authenticator of the old membership goes (it may be lost).
            _two_factor_clear(existing)
            existing.save(
                update_fields=["password", "role", "is_active", "full_name", "two_factor_enabled"]
            )
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
    """The acting person's own user id (an organization's user, or staff in the public schema):
    an API key or the system has no account to change."""
    if actor.kind not in {"user", "staff"} or not actor.id:
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
    audit.require(actor, "org:read", action="user.sessions_ended", resource_type="user")
    with transaction.atomic():
        ended = _sessions_end(user_id=_own_user_id(actor), keep_session_key=keep_session_key)
        audit.emit(
            actor=actor,
            action="user.sessions_ended",
            resource_type="user",
            resource_id=_own_user_id(actor),
            details={"ended": ended},
        )
    return ended


def _sessions_end(*, user_id: int, keep_session_key: str = "") -> int:
    """End every session of the user but `keep_session_key`; returns how many ended."""
    from django.contrib.sessions.models import Session

    from accounts import selectors

    others = [key for key in selectors.session_keys_of(user_id=user_id) if key != keep_session_key]
    ended, _ = Session.objects.filter(session_key__in=others).delete()
    return ended


# --- Two-factor authentication (TOTP and recovery codes) -----------------------------------------

INVALID_CODE = "That code is not valid. Enter the current code from your app, or a recovery code."


def _two_factor_clear(user: User) -> None:
    """Remove the user's authenticator and recovery codes (the caller saves `user`)."""
    TotpDevice.objects.filter(user=user).delete()
    RecoveryCode.objects.filter(user=user).delete()
    user.two_factor_enabled = False


def _recovery_codes_issue(user: User) -> list[str]:
    """Replace the user's recovery codes with ten new ones; returns them (shown once)."""
    codes = two_factor.new_recovery_codes()
    RecoveryCode.objects.filter(user=user).delete()
    RecoveryCode.objects.bulk_create(
        RecoveryCode(user=user, code_hash=two_factor.recovery_code_hash(code)) for code in codes
    )
    return codes


def _code_accept(actor: Actor, user: User, code: object) -> str | None:
    """Spend `code` for `user` (locked by the caller): a current TOTP code, not used before, or an
    unused recovery code. Returns "totp" or "recovery_code", or None if it is neither."""
    typed = two_factor.normalize_code(code)
    if not typed:
        return None
    if two_factor.is_totp_code(typed):
        device = TotpDevice.objects.select_for_update().filter(user=user).first()
        if device is None:
            return None
        try:
            secret = two_factor.decrypt_secret(device.encrypted_secret, user_id=user.pk)
        except two_factor.SecretUnreadable:
            return None
        step = two_factor.matching_step(secret, typed, after_step=device.last_used_step)
        if step is None:
            return None
        device.last_used_step = step
        device.save(update_fields=["last_used_step"])
        return "totp"
    recovery = (
        RecoveryCode.objects.select_for_update()
        .filter(user=user, code_hash=two_factor.recovery_code_hash(typed), used_at__isnull=True)
        .first()
    )
    if recovery is None:
        return None
    recovery.used_at = timezone.now()
    recovery.save(update_fields=["used_at"])
    audit.emit(
        actor=actor,
        action="user.two_factor_recovery_code_used",
        resource_type="user",
        resource_id=user.pk,
        details={"remaining": RecoveryCode.objects.filter(user=user, used_at__isnull=True).count()},
    )
    return "recovery_code"


def two_factor_code_check(*, actor: Actor, user_id: int, code: object) -> str:
    """The second step of a sign-in: spend a code of the active user `user_id`, who has two-factor
    authentication on. Returns how ("totp" or "recovery_code"); ValidationError if it is wrong."""
    with transaction.atomic():
        user = User.objects.select_for_update().filter(pk=user_id, is_active=True).first()
        method = None
        if user is not None and user.two_factor_enabled:
            method = _code_accept(actor, user, code)
    if method is None:
        raise ValidationError({"code": [INVALID_CODE]}, code="invalid_code")
    return method


def two_factor_enable(
    *, actor: Actor, encrypted_secret: str, code: object, keep_session_key: str
) -> list[str]:
    """Turn two-factor authentication on for the acting user, with the secret their app was set
    up with (encrypted, as accounts.two_factor gave it) and a first code from it, which proves
    the app works. Returns the ten recovery codes, shown once; every other session ends."""
    audit.require(actor, "org:read", action="user.two_factor_enabled", resource_type="user")
    user_id = _own_user_id(actor)
    try:
        secret = two_factor.decrypt_secret(encrypted_secret, user_id=user_id)
    except two_factor.SecretUnreadable as error:
        raise ValidationError({"code": ["Start the setup again."]}, code="stale") from error
    step = two_factor.matching_step(secret, two_factor.normalize_code(code), after_step=0)
    if step is None:
        raise ValidationError(
            {"code": ["That code does not match. Enter the 6 digits your app shows now."]},
            code="invalid_code",
        )
    with transaction.atomic():
        user = User.objects.select_for_update().get(pk=user_id)
        if user.two_factor_enabled:
            raise ValidationError(
                {"code": ["Two-factor authentication is on already."]}, code="already_enabled"
            )
        TotpDevice.objects.filter(user=user).delete()
        TotpDevice.objects.create(
            user=user,
            encrypted_secret=two_factor.encrypt_secret(secret, user_id=user.pk),
            last_used_step=step,
        )
        codes = _recovery_codes_issue(user)
        user.two_factor_enabled = True
        user.save(update_fields=["two_factor_enabled"])
        ended = _sessions_end(user_id=user.pk, keep_session_key=keep_session_key)
        audit.emit(
            actor=actor,
            action="user.two_factor_enabled",
            resource_type="user",
            resource_id=user.pk,
            details={"method": "totp", "signed_out": ended},
        )
    return codes


def _proof_accept(actor: Actor, user: User, proof: object) -> bool:
    """Whether `proof` is the user's password or one of their codes (spent if it is one)."""
    if isinstance(proof, str) and proof and user.check_password(proof):
        return True
    return _code_accept(actor, user, proof) is not None


def _own_locked_with_two_factor(actor: Actor) -> User:
    user = User.objects.select_for_update().get(pk=_own_user_id(actor))
    if not user.two_factor_enabled:
        raise ValidationError({"proof": ["Two-factor authentication is off."]}, code="not_enabled")
    return user


def two_factor_disable(*, actor: Actor, proof: object, keep_session_key: str) -> User:
    """Turn the acting user's two-factor authentication off, proving it is them with their
    password or a code. Their authenticator and recovery codes go; every other session ends."""
    action = "user.two_factor_disabled"
    audit.require(actor, "org:read", action=action, resource_type="user")
    with transaction.atomic():
        user = _own_locked_with_two_factor(actor)
        if not _proof_accept(actor, user, proof):
            raise ValidationError(
                {"proof": ["That is neither your password nor a valid code."]}, code="invalid"
            )
        _two_factor_clear(user)
        user.save(update_fields=["two_factor_enabled"])
        ended = _sessions_end(user_id=user.pk, keep_session_key=keep_session_key)
        audit.emit(
            actor=actor,
            action=action,
            resource_type="user",
            resource_id=user.pk,
            details={"signed_out": ended},
        )
    return user


def recovery_codes_regenerate(*, actor: Actor, proof: object) -> list[str]:
    """Ten new recovery codes for the acting user (the old ones stop working), proving it is them
    with their password or a code. Returns the codes, shown once."""
    action = "user.two_factor_recovery_codes_regenerated"
    audit.require(actor, "org:read", action=action, resource_type="user")
    with transaction.atomic():
        user = _own_locked_with_two_factor(actor)
        if not _proof_accept(actor, user, proof):
            raise ValidationError(
                {"proof": ["That is neither your password nor a valid code."]}, code="invalid"
            )
        codes = _recovery_codes_issue(user)
        audit.emit(
            actor=actor,
            action=action,
            resource_type="user",
            resource_id=user.pk,
            details={"count": len(codes)},
        )
    return codes


def member_two_factor_reset(*, actor: Actor, user_id: int) -> User:
    """An admin turns a member's two-factor authentication off (a lost phone and lost recovery
    codes): the member signs in with their password again, and every session of theirs ends.
    The same rules as a role change: not yourself, not someone ranked above you."""
    action = "member.two_factor_reset"
    _check_member(actor, user_id, action)
    with transaction.atomic():
        user = _relock(actor, user_id)
        if not user.two_factor_enabled:
            return user
        _two_factor_clear(user)
        user.save(update_fields=["two_factor_enabled"])
        ended = _sessions_end(user_id=user.pk)
        audit.emit(
            actor=actor,
            action=action,
            resource_type="user",
            resource_id=user.pk,
            details={"email": user.email, "signed_out": ended},
            recheck=True,
        )
    return user


def staff_two_factor_reset(*, actor: Actor, email: str) -> User:
    """Turn a staff account's two-factor authentication off (`manage.py staff_two_factor_reset`,
    for staff who lost their authenticator); every session of theirs ends."""
    from tenants import context

    with context.public_context(), transaction.atomic():
        user = (
            User.objects.select_for_update()
            .filter(email=email.strip().lower(), is_staff=True)
            .first()
        )
        if user is None:
            raise User.DoesNotExist
        _two_factor_clear(user)
        user.save(update_fields=["two_factor_enabled"])
        ended = _sessions_end(user_id=user.pk)
        audit.record(
            actor=actor,
            action="staff.two_factor_reset",
            resource_type="user",
            resource_id=user.pk,
            details={"email": user.email, "signed_out": ended},
        )
    return user

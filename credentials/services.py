"""Every write to machine credentials: API keys, token issue, refresh, revocation, failures."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.contrib.auth import authenticate
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.utils import timezone

from accounts.models import User
from accounts.roles import ROLE_PERMISSIONS
from audit import services as audit
from audit.actors import Actor
from audit.models import Result
from credentials.models import ApiKey, RefreshToken
from tenants import api_keys, context, ratelimit, tokens

MANAGE_PERMISSION = "api_keys:manage"
# Powers a key never carries, whatever its creator holds: a key must not mint keys or owners.
NON_DELEGABLE = frozenset({MANAGE_PERMISSION, "members:grant_owner"})
NAME_MAX_LENGTH = 100
MAX_SCOPES = 64


class Refused(Exception):
    """A credential was refused: `code` is the stable API error code (a 401)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class TokenPair:
    access: str = field(repr=False)
    refresh: str = field(repr=False)
    access_expires_at: datetime
    refresh_expires_at: datetime


def _tenant():
    tenant = context.current_tenant()
    if tenant is None:
        raise PermissionDenied("Credentials exist only inside an organization.")
    return tenant


# Scopes --------------------------------------------------------------------------------------


def delegable_scopes() -> frozenset[str]:
    """Every permission some role grants, less the ones a key may never carry."""
    every = frozenset().union(*ROLE_PERMISSIONS.values())
    return every - NON_DELEGABLE


def grantable_scopes(actor: Actor) -> list[str]:
    """The scopes `actor` may put on a key: delegable ones their role holds."""
    return sorted(scope for scope in delegable_scopes() if actor.can(scope))


def _clean_scopes(actor: Actor, scopes: Iterable[object]) -> list[str]:
    if isinstance(scopes, str | bytes) or not isinstance(scopes, list | tuple):
        raise ValidationError({"scopes": ["Give a list of scopes."]})
    if not scopes:
        raise ValidationError({"scopes": ["Give at least one scope."]})
    if len(scopes) > MAX_SCOPES:
        raise ValidationError({"scopes": [f"At most {MAX_SCOPES} scopes."]})
    known, allowed = delegable_scopes(), set(grantable_scopes(actor))
    errors = []
    for scope in scopes:
        if not isinstance(scope, str) or scope not in known:
            errors.append(f"Unknown scope “{str(scope)[:64]}”.")
        elif scope not in allowed:
            errors.append(f"You cannot grant “{scope}”: your role does not hold it.")
    if errors:
        raise ValidationError({"scopes": errors})
    return sorted(set(scopes))


# API keys ------------------------------------------------------------------------------------


def api_key_create(
    *, actor: Actor, name: str, scopes: list[str], expires_at: datetime | None = None
) -> tuple[ApiKey, str]:
    """Create a key. Returns it and its full text, which is never available again."""
    tenant = _tenant()
    if not actor.can(MANAGE_PERMISSION) or actor.user is None:
        audit.deny(
            actor=actor,
            action="api_key.created",
            resource_type="api_key",
            reason="You cannot manage API keys.",
        )
    name = (name or "").strip()
    errors: dict[str, list[str]] = {}
    if not name:
        errors["name"] = ["Give the key a name."]
    elif len(name) > NAME_MAX_LENGTH:
        errors["name"] = [f"At most {NAME_MAX_LENGTH} characters."]
    if expires_at is not None and expires_at <= timezone.now():
        errors["expires_at"] = ["The expiry must be in the future."]
    try:
        clean_scopes = _clean_scopes(actor, scopes)
    except ValidationError as error:
        errors.update(error.message_dict)
    if errors:
        raise ValidationError(errors)
    ratelimit.hit(
        scope="api_key_create",
        key=f"user:{actor.id}",
        rate=settings.API_KEY_CREATE_RATE,
        fail_closed=True,
    )
    raw, parsed = api_keys.generate()
    with transaction.atomic():
        key = ApiKey.objects.create(
            name=name,
            lookup_id=parsed.lookup_id,
            secret_hash=api_keys.hash_secret(
                tenant_id=str(tenant.public_id), lookup_id=parsed.lookup_id, secret=parsed.secret
            ),
            tenant_id=str(tenant.public_id),
            scopes=clean_scopes,
            created_by=actor.user,
            expires_at=expires_at,
        )
        audit.emit(
            actor=actor,
            action="api_key.created",
            resource_type="api_key",
            resource_id=key.pk,
            details={
                "name": key.name,
                "prefix": key.prefix,
                "scopes": clean_scopes,
                "expires_at": expires_at.isoformat() if expires_at else None,
            },
        )
    return key, raw


def api_key_revoke(*, actor: Actor, key_id: int) -> ApiKey:
    """Revoke a key: refused from the next request on, in every process (keys are not cached)."""
    if not actor.can(MANAGE_PERMISSION):
        audit.deny(
            actor=actor,
            action="api_key.revoked",
            resource_type="api_key",
            resource_id=str(key_id),
            reason="You cannot manage API keys.",
        )
    with transaction.atomic():
        key = ApiKey.objects.select_for_update().get(pk=key_id)
        if key.revoked_at is not None:
            return key
        key.revoked_at = timezone.now()
        key.revoked_by = actor.user
        key.save(update_fields=["revoked_at", "revoked_by"])
        audit.emit(
            actor=actor,
            action="api_key.revoked",
            resource_type="api_key",
            resource_id=key.pk,
            details={"name": key.name, "prefix": key.prefix},
            recheck=True,  # open sockets using the key close at once
        )
    return key


def api_key_record_use(*, actor: Actor, key: ApiKey) -> bool:
    """Note that `key` was used today; writes at most once a day per key (True if it did)."""
    now = timezone.now()
    start_of_day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if key.last_used_at is not None and key.last_used_at >= start_of_day:
        return False
    with transaction.atomic():
        # Conditional on the stored value, so concurrent first uses write (and audit) once.
        updated = (
            ApiKey.objects.filter(pk=key.pk)
            .exclude(last_used_at__gte=start_of_day)
            .update(last_used_at=now)
        )
        if updated:
            audit.record(
                actor=actor,
                action="api_key.used",
                resource_type="api_key",
                resource_id=key.pk,
                details={"name": key.name, "prefix": key.prefix, "first_use_today": True},
            )
    key.last_used_at = now
    return bool(updated)


# Tokens --------------------------------------------------------------------------------------


def _issue(*, actor: Actor, user: User, family: uuid.UUID, action: str) -> TokenPair:
    """Sign a new pair for `user` in the current organization and remember the refresh token."""
    tenant = _tenant()
    access = tokens.new_access_token(tenant=tenant, user=user)
    refresh = tokens.new_refresh_token(tenant=tenant, user=user, family=family)
    issued_at = timezone.now()
    refresh_expires_at = issued_at + timedelta(seconds=settings.JWT_REFRESH_TOKEN_LIFETIME_SECONDS)
    RefreshToken.objects.create(
        jti=refresh["jti"],
        family=family,
        user=user,
        issued_at=issued_at,
        expires_at=refresh_expires_at,
    )
    audit.record(
        actor=actor,
        action=action,
        resource_type="user",
        resource_id=user.pk,
        details={"email": user.email, "role": user.role, "family": str(family)},
    )
    return TokenPair(
        access=str(access),
        refresh=str(refresh),
        access_expires_at=issued_at + timedelta(seconds=settings.JWT_ACCESS_TOKEN_LIFETIME_SECONDS),
        refresh_expires_at=refresh_expires_at,
    )


def token_pair_issue(*, actor: Actor, user: User) -> TokenPair:
    """Issue a pair for `user`, a new sign-in (the caller has authenticated them)."""
    if not user.is_active:
        raise Refused("user_inactive", "The account is deactivated.")
    with transaction.atomic():
        return _issue(actor=actor, user=user, family=uuid.uuid4(), action="token.issued")


def token_obtain(*, actor: Actor, email: str, password: str, request=None) -> TokenPair:
    """Exchange an account's email and password for an access and a refresh token.

    Rate limited per client address and per account in this organization, failing closed.
    """
    email = (email or "").strip().lower()
    ratelimit.hit(
        scope="token_obtain_ip",
        key=f"ip:{actor.ip}",
        rate=settings.API_TOKEN_RATE_PER_IP,
        fail_closed=True,
    )
    ratelimit.hit(
        scope="token_obtain_account",
        key=f"account:{email}",
        rate=settings.API_TOKEN_RATE_PER_ACCOUNT,
        fail_closed=True,
    )
    user = authenticate(request, email=email, password=password or "")
    if user is None or not user.is_active:
        # Recorded as a failed login (not a generic auth failure) so that the failed-logins
        # alert rule sees password guessing over the API as it sees it in the portal.
        audit.login_record(actor=actor, email=email, succeeded=False, method="api_token")
        raise Refused("invalid_credentials", "The email or password is wrong.")
    return token_pair_issue(
        actor=Actor.for_user(user, request) if actor.kind == "anonymous" else actor, user=user
    )


def token_refresh(*, actor: Actor, refresh: str) -> TokenPair:
    """Trade a refresh token for a new pair. Each refresh token works once.

    A refresh token presented a second time was copied: the whole family (every token descended
    from the same sign-in) is revoked, and the caller gets 401.
    """
    tenant = _tenant()
    try:
        claims = tokens.verify_refresh_token(refresh, tenant=tenant)
    except tokens.TokenRefused as error:
        authentication_failure_record(actor=actor, scheme="refresh", code=error.code)
        raise Refused(error.code, error.message) from error
    now = timezone.now()
    outcome = None
    with transaction.atomic():
        row = (
            RefreshToken.objects.select_for_update()
            .select_related("user")
            .filter(jti=claims["jti"])
            .first()
        )
        if row is None or str(row.user_id) != claims["sub"]:
            outcome = ("token_invalid", "The refresh token is unknown.")
        elif row.revoked_at is not None:
            outcome = ("token_revoked", "The refresh token was revoked.")
        elif row.used_at is not None:
            RefreshToken.objects.filter(family=row.family, revoked_at__isnull=True).update(
                revoked_at=now
            )
            audit.record(
                actor=actor,
                action="token.reuse_detected",
                resource_type="user",
                resource_id=row.user_id,
                result=Result.DENIED,
                details={"family": str(row.family), "email": row.user.email},
            )
            outcome = ("token_reused", "The refresh token was already used: sign in again.")
        elif not row.user.is_active:
            outcome = ("user_inactive", "The account is deactivated.")
        else:
            row.used_at = now
            row.save(update_fields=["used_at"])
            return _issue(actor=actor, user=row.user, family=row.family, action="token.refreshed")
    code, message = outcome
    if code != "token_reused":
        authentication_failure_record(actor=actor, scheme="refresh", code=code)
    raise Refused(code, message)


def token_revoke(*, actor: Actor, refresh: str) -> None:
    """End a sign-in: the refresh token and every token of its family stop working."""
    tenant = _tenant()
    try:
        claims = tokens.verify_refresh_token(refresh, tenant=tenant)
    except tokens.TokenRefused as error:
        authentication_failure_record(actor=actor, scheme="refresh", code=error.code)
        raise Refused(error.code, error.message) from error
    with transaction.atomic():
        row = RefreshToken.objects.filter(jti=claims["jti"]).first()
        if row is None:
            raise Refused("token_invalid", "The refresh token is unknown.")
        revoked = RefreshToken.objects.filter(family=row.family, revoked_at__isnull=True).update(
            revoked_at=timezone.now()
        )
        audit.record(
            actor=actor,
            action="token.revoked",
            resource_type="user",
            resource_id=row.user_id,
            details={"family": str(row.family), "revoked": revoked},
        )


def authentication_failure_record(
    *, actor: Actor, scheme: str, code: str, subject: str = ""
) -> None:
    """Record a refused credential (never the credential itself)."""
    details = {"scheme": scheme, "code": code}
    if subject:
        details["subject"] = subject[:254]
    audit.record(
        actor=actor,
        action="auth.failed",
        resource_type="credential",
        result=Result.FAILED,
        details=details,
    )

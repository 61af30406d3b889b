"""Every write to machine credentials: API keys, token issue, refresh, revocation, failures."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth import authenticate
from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.utils import timezone

from audit import failures as audit_failures
from audit import services as audit
from audit.models import Result
from core.actors import Actor
from core.errors import Unauthenticated
from core.roles import API_KEYS_MANAGE, delegable_scopes
from credentials import api_keys, keyring, tokens
from credentials.models import ApiKey, RefreshToken
from tenants import context, ratelimit
from tenants.models import SigningKey, SigningKeyStatus

MANAGE_PERMISSION = API_KEYS_MANAGE
NAME_MAX_LENGTH = 100
MAX_SCOPES = 64
# What a key's own limits may apply to (billing's resources a key's requests count against).
KEY_LIMIT_RESOURCES = ("api", "tasks", "usage_events")
KEY_LIMIT_MAX = 1_000_000
KEY_WINDOW_MAX_SECONDS = 86400

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TokenPair:
    access: str = field(repr=False)
    refresh: str = field(repr=False)
    access_expires_at: datetime
    refresh_expires_at: datetime


# Scopes --------------------------------------------------------------------------------------


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
            errors.append(ValidationError(f"Unknown scope “{str(scope)[:64]}”.", code="invalid"))
        elif scope not in allowed:
            # A scope the document lists, that this caller may not give: 403 (core.errors).
            message = f"You cannot grant “{scope}”: your role does not hold it."
            errors.append(ValidationError(message, code="not_held"))
    if errors:
        raise ValidationError({"scopes": errors})
    return sorted(set(scopes))


def clean_rate_limits(rate_limits: object) -> dict[str, dict[str, int]]:
    """{resource: {"limit", "window_seconds"}} checked: known resources, whole numbers in range."""
    if not isinstance(rate_limits, dict):
        raise ValidationError({"rate_limits": ["An object: {resource: {limit, window_seconds}}."]})
    clean: dict[str, dict[str, int]] = {}
    problems = []
    for resource, value in rate_limits.items():
        if resource not in KEY_LIMIT_RESOURCES:
            known = ", ".join(KEY_LIMIT_RESOURCES)
            problems.append(f"Unknown resource “{str(resource)[:32]}” ({known}).")
            continue
        limit = value.get("limit") if isinstance(value, dict) else None
        window = value.get("window_seconds", 60) if isinstance(value, dict) else None
        if (
            not isinstance(value, dict)
            or set(value) - {"limit", "window_seconds"}
            or not _whole(limit, 0, KEY_LIMIT_MAX)
            or not _whole(window, 1, KEY_WINDOW_MAX_SECONDS)
        ):
            problems.append(
                f"“{resource}”: limit from 0 to {KEY_LIMIT_MAX:,}, window_seconds from 1 to "
                f"{KEY_WINDOW_MAX_SECONDS:,}."
            )
            continue
        clean[resource] = {"limit": limit, "window_seconds": window}
    if problems:
        raise ValidationError({"rate_limits": problems})
    return clean


def _whole(value: object, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


# API keys ------------------------------------------------------------------------------------


def api_key_create(
    *,
    actor: Actor,
    name: str,
    scopes: list[str],
    expires_at: datetime | None = None,
    rate_limits: dict[str, Any] | None = None,
) -> tuple[ApiKey, str]:
    """Create a key. Returns it and its full text, which is never available again."""
    tenant = context.require_tenant()
    if not actor.can(MANAGE_PERMISSION) or actor.user is None:
        audit.deny(
            actor=actor,
            action="api_key.created",
            resource_type="api_key",
            reason="You cannot manage API keys.",
        )
    name = (name or "").strip()
    errors: dict[str, list[Any]] = {}
    if not name:
        errors["name"] = ["Give the key a name."]
    elif len(name) > NAME_MAX_LENGTH:
        errors["name"] = [f"At most {NAME_MAX_LENGTH} characters."]
    if expires_at is not None and expires_at <= timezone.now():
        # Well-formed, refused for when it is: 422 (core.errors.UNPROCESSABLE_CODES).
        errors["expires_at"] = [
            ValidationError("The expiry must be in the future.", code="in_past")
        ]
    try:
        clean_scopes = _clean_scopes(actor, scopes)
    except ValidationError as error:
        errors.update(error.error_dict)  # the errors themselves, codes kept (core.errors)
    try:
        clean_limits = clean_rate_limits(rate_limits or {})
    except ValidationError as error:
        errors.update(error.error_dict)
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
            rate_limits=clean_limits,
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
                "rate_limits": clean_limits,
            },
        )
    return key, raw


def api_key_limits_set(*, actor: Actor, key_id: int, rate_limits: dict[str, Any]) -> ApiKey:
    """Replace a key's own rate limits (an empty object removes them), audited
    `api_key.limits_changed`; in force from the key's next request."""
    if not actor.can(MANAGE_PERMISSION):
        audit.deny(
            actor=actor,
            action="api_key.limits_changed",
            resource_type="api_key",
            resource_id=str(key_id),
            reason="You cannot manage API keys.",
        )
    clean = clean_rate_limits(rate_limits)
    with transaction.atomic():
        key = ApiKey.objects.select_for_update().get(pk=key_id)
        if key.revoked_at is not None:
            raise ValidationError(
                {"rate_limits": [ValidationError("The key is revoked.", code="revoked")]}
            )
        before = key.rate_limits
        key.rate_limits = clean
        key.save(update_fields=["rate_limits"])
        audit.emit(
            actor=actor,
            action="api_key.limits_changed",
            resource_type="api_key",
            resource_id=key.pk,
            details={"name": key.name, "prefix": key.prefix, "before": before, "after": clean},
            recheck=True,  # every process drops its cached copy of the key: limits apply at once
        )
    return key


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


def _issue(*, actor: Actor, user: Any, family: uuid.UUID, action: str) -> TokenPair:
    """Sign a new pair for `user` in the current organization and remember the refresh token."""
    tenant = context.require_tenant()
    if keyring.current().active_kid is None:  # a fresh deployment's first token
        signing_key_rotate(actor=Actor.system("keyring bootstrap"), only_if_none=True)
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


def token_pair_issue(*, actor: Actor, user: Any) -> TokenPair:
    """Issue a pair for `user`, a new sign-in (the caller has authenticated them)."""
    if not user.is_active:
        raise Unauthenticated("user_inactive", "The account is deactivated.")
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
        resource="auth",
    )
    ratelimit.hit(
        scope="token_obtain_account",
        key=f"account:{email}",
        rate=settings.API_TOKEN_RATE_PER_ACCOUNT,
        fail_closed=True,
        resource="auth",
    )
    user = authenticate(request, email=email, password=password or "")
    if user is None or not user.is_active:
        # Recorded as a failed login (not a generic auth failure) so that the failed-logins
        # alert rule sees password guessing over the API as it sees it in the portal.
        audit_failures.login_failure_record(actor=actor, email=email, method="api_token")
        raise Unauthenticated("invalid_credentials", "The email or password is wrong.")
    if user.two_factor_enabled:
        # A password alone must not open an account that signs in with a second factor.
        audit_failures.login_failure_record(actor=actor, email=email, method="api_token_2fa")
        raise Unauthenticated(
            "two_factor_required",
            "This account uses two-factor authentication: sign in through the portal, or use "
            "an API key.",
        )
    return token_pair_issue(
        actor=Actor.for_user(user, request) if actor.kind == "anonymous" else actor, user=user
    )


def token_refresh(*, actor: Actor, refresh: str) -> TokenPair:
    """Trade a refresh token for a new pair. Each refresh token works once.

    A refresh token presented a second time was copied: the whole family (every token descended
    from the same sign-in) is revoked, and the caller gets 401.
    """
    tenant = context.require_tenant()
    try:
        claims = tokens.verify_refresh_token(refresh, tenant=tenant)
    except tokens.TokenRefused as error:
        authentication_failure_record(actor=actor, scheme="refresh", code=error.code)
        raise Unauthenticated(error.code, error.message) from error
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
        elif row.user.two_factor_enabled:
            # Issued for the password alone, before two-factor was set up: it ends with it.
            outcome = (
                "two_factor_required",
                "This account now uses two-factor authentication: use an API key.",
            )
        else:
            row.used_at = now
            row.save(update_fields=["used_at"])
            return _issue(actor=actor, user=row.user, family=row.family, action="token.refreshed")
    code, message = outcome
    if code != "token_reused":
        authentication_failure_record(actor=actor, scheme="refresh", code=code)
    raise Unauthenticated(code, message)


def token_revoke(*, actor: Actor, refresh: str) -> None:
    """End a sign-in: the refresh token and every token of its family stop working."""
    tenant = context.require_tenant()
    try:
        claims = tokens.verify_refresh_token(refresh, tenant=tenant)
    except tokens.TokenRefused as error:
        authentication_failure_record(actor=actor, scheme="refresh", code=error.code)
        raise Unauthenticated(error.code, error.message) from error
    with transaction.atomic():
        row = RefreshToken.objects.filter(jti=claims["jti"]).first()
        if row is None:
            raise Unauthenticated("token_invalid", "The refresh token is unknown.")
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
    """Count a refused credential (never the credential itself): throttled, then aggregated.

    Failures are throttled per client address and per organization (RateLimited, a 429 with
    `Retry-After`; RateLimiterUnavailable, a 503, when the counters cannot be reached: a flood is
    never let through unmetered). What passes the throttle is recorded aggregated per source
    and window (audit.failures), so that no outsider can grow the log one row per request.
    """
    ratelimit.hit(
        scope="auth_failures_ip",
        key=f"ip:{actor.ip or 'unknown'}",
        rate=settings.AUTH_FAILURE_RATE_PER_IP,
        fail_closed=True,
    )
    ratelimit.hit(
        scope="auth_failures_organization",
        key="all",
        rate=settings.AUTH_FAILURE_RATE_PER_ORGANIZATION,
        fail_closed=True,
    )
    details = {"scheme": scheme, "code": code}
    if subject:
        details["subject"] = subject[:254]
    audit_failures.failure_record(
        actor=actor, action="auth.failed", resource_type="credential", details=details
    )


# JWT signing keys (credentials.keyring), platform staff only ---------------------------------


def signing_key_rotate(
    *, actor: Actor, retire_previous_now: bool = False, only_if_none: bool = False
) -> SigningKey | None:
    """Make a new signing key active; the old one verifies until the tokens it signed expire.

    `retire_previous_now` (a compromised key): the old key stops verifying at once, and every
    token it signed with it. `only_if_none`: create the first key, unless one exists already.
    Keys whose verification window has passed are retired on the way. Returns the new key.
    """
    audit.require_staff(actor, "signing_key.rotated", "signing_key")
    new = keyring.generate()
    now = timezone.now()
    lifetime = max(
        settings.JWT_ACCESS_TOKEN_LIFETIME_SECONDS, settings.JWT_REFRESH_TOKEN_LIFETIME_SECONDS
    )
    with context.public_context(), transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(hashtext('agentplane.signing-keys'))")
        previous = SigningKey.objects.filter(status=SigningKeyStatus.ACTIVE).first()
        if previous is not None and only_if_none:
            return None
        retired = _retire_expired_signing_keys(now)
        if previous is not None:
            previous.status = (
                SigningKeyStatus.RETIRED if retire_previous_now else SigningKeyStatus.PREVIOUS
            )
            previous.private_key_wrapped = None
            previous.rotated_at = now
            previous.verify_until = (
                now if retire_previous_now else now + timedelta(seconds=lifetime)
            )
            previous.retired_at = now if retire_previous_now else None
            previous.save(
                update_fields=[
                    "status",
                    "private_key_wrapped",
                    "rotated_at",
                    "verify_until",
                    "retired_at",
                ]
            )
        key = SigningKey.objects.create(
            kid=new.kid,
            status=SigningKeyStatus.ACTIVE,
            public_key_pem=new.public_key_pem,
            private_key_wrapped=new.private_key_wrapped,
        )
        audit.record(
            actor=actor,
            action="signing_key.rotated",
            resource_type="signing_key",
            resource_id=key.kid,
            details={
                "previous": previous.kid if previous is not None else None,
                "previous_verifies_until": (
                    previous.verify_until.isoformat() if previous is not None else None
                ),
                "retired": retired,
            },
        )
        transaction.on_commit(keyring.publish_change)
    logger.info("signing key rotated: %s is active", key.kid)
    return key


def signing_key_retire(*, actor: Actor, kid: str) -> SigningKey:
    """Retire a previous key now: tokens it signed stop verifying (a compromised key)."""
    audit.require_staff(actor, "signing_key.retired", "signing_key", kid)
    with context.public_context(), transaction.atomic():
        key = SigningKey.objects.select_for_update().get(kid=kid)
        if key.status == SigningKeyStatus.ACTIVE:
            raise ValidationError(
                "The active key cannot be retired: rotate, retiring the previous key at once.",
                code="signing_key_active",
            )
        if key.status == SigningKeyStatus.RETIRED:
            return key
        now = timezone.now()
        key.status = SigningKeyStatus.RETIRED
        key.retired_at = now
        key.verify_until = min(key.verify_until or now, now)
        key.save(update_fields=["status", "retired_at", "verify_until"])
        audit.record(
            actor=actor,
            action="signing_key.retired",
            resource_type="signing_key",
            resource_id=key.kid,
            details={"reason": "manual"},
        )
        transaction.on_commit(keyring.publish_change)
    return key


def signing_keys_retire_expired(*, actor: Actor) -> list[str]:
    """Retire the previous keys whose tokens have all expired. Returns their kids."""
    audit.require_staff(actor, "signing_key.retired", "signing_key")
    with context.public_context(), transaction.atomic():
        retired = _retire_expired_signing_keys(timezone.now())
        for kid in retired:
            audit.record(
                actor=actor,
                action="signing_key.retired",
                resource_type="signing_key",
                resource_id=kid,
                details={"reason": "expired"},
            )
        if retired:
            transaction.on_commit(keyring.publish_change)
    return retired


def _retire_expired_signing_keys(now) -> list[str]:
    expired = list(
        SigningKey.objects.select_for_update()
        .filter(status=SigningKeyStatus.PREVIOUS, verify_until__lte=now)
        .values_list("kid", flat=True)
    )
    if expired:
        SigningKey.objects.filter(kid__in=expired).update(
            status=SigningKeyStatus.RETIRED, retired_at=now
        )
    return expired

"""Who is calling the API: Bearer JWTs, `Api-Key` keys and the portal's own session.

Each scheme yields a `Credential` (DRF's `request.auth`): the organization it is valid in, the
permissions it carries, and the audit actor it acts as. core.permissions.RequiredPermission checks a
view's declared permission against `Credential.permissions`, the one check for every scheme:
- session: the user's role (core.roles);
- JWT: the user's current role, intersected with the role the token was issued for (a demotion
  takes effect at once; a token never grows);
- API key: the key's scopes, intersected with its creator's current role (a deactivated creator
  disables the key).
Verification is also exposed as `authenticate_credential(raw, tenant)` for the WebSocket gateway.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from django.contrib.auth import get_user_model
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions

from core.actors import Actor, Credential
from core.roles import permissions_for
from credentials import api_keys, selectors, services, tokens
from tenants import context, events

if TYPE_CHECKING:
    from tenants.models import Tenant

logger = logging.getLogger(__name__)

BEARER = "Bearer"
API_KEY = "Api-Key"

# Verified API keys (with their creators), per process, by organization and lookup id. An entry
# is used only while the organization's credential epoch (tenants.events) is the one it was
# loaded under: a revocation, a member's demotion or deactivation, a suspension replace the
# epoch, so every process refuses from its next request on. The epoch costs one Redis GET per
# request instead of the key's database lookup. MAX_AGE bounds an entry if an epoch change was
# lost (Redis unreachable at that moment); with Redis unreachable now, nothing cached is used.
KEY_CACHE_MAX_AGE_SECONDS = 60.0
KEY_CACHE_MAX_ENTRIES = 10_000
_key_cache: dict[tuple[str, str], tuple[float, str | None, Any]] = {}
_key_cache_lock = threading.Lock()


class CredentialRefused(exceptions.AuthenticationFailed):
    """A 401 with a stable code: `token_invalid`, `token_expired`, `api_key_revoked` ..."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(detail=message, code=code)
        self.error_code = code


class ApiKeyPrincipal:
    """`request.user` for a request made with an API key: not a person, holds the key's scopes."""

    is_authenticated = True
    is_anonymous = False
    is_active = True
    is_staff = False
    is_superuser = False
    role = ""

    def __init__(self, key: Any, permissions: frozenset[str]) -> None:
        self.key = key
        self.pk = None
        self.email = ""
        self._permissions = permissions

    def can(self, permission: str) -> bool:
        return permission in self._permissions

    def __str__(self) -> str:
        return f"API key {self.key.prefix}"


def _tenant_or_refuse() -> Any:
    tenant = context.current_tenant()
    if tenant is None:
        raise CredentialRefused(
            "wrong_host", "Credentials are accepted on organization hosts only."
        )
    return tenant


def _refuse_inactive(tenant: Tenant) -> None:
    if not tenant.is_active:
        raise CredentialRefused("organization_suspended", "This organization is suspended.")


def _record_failure(request: Any, scheme: str, code: str) -> None:
    if context.current_tenant() is None:
        return
    services.authentication_failure_record(actor=Actor.anonymous(request), scheme=scheme, code=code)


def verify_jwt(raw: str, tenant: Tenant) -> Credential:
    """A Credential for a valid access token of `tenant`; raises CredentialRefused."""
    User = get_user_model()  # noqa: N806 (accounts' model, reached without importing accounts)
    _refuse_inactive(tenant)
    try:
        claims = tokens.verify_access_token(raw, tenant=tenant)
    except tokens.TokenRefused as error:
        raise CredentialRefused(error.code, error.message) from error
    try:
        user = User.objects.get(pk=int(claims["sub"]))
    except (User.DoesNotExist, TypeError, ValueError) as error:
        raise CredentialRefused("token_invalid", "The token's account does not exist.") from error
    if not user.is_active:
        raise CredentialRefused("user_inactive", "The account is deactivated.")
    granted = permissions_for(claims.get("role", "")) & permissions_for(user.role)
    return Credential(scheme="jwt", tenant=tenant, permissions=granted, user=user, claims=claims)


def verify_api_key(raw: str, tenant: Tenant, request: Any = None) -> Credential:
    """A Credential for a valid API key of `tenant`; raises CredentialRefused.

    A malformed key or a wrong checksum is refused before any database work; then one indexed
    lookup by the public id, and a constant-time comparison of the keyed hashes.
    """
    _refuse_inactive(tenant)
    parsed = api_keys.parse(raw)
    if parsed is None:
        raise CredentialRefused("api_key_invalid", "The API key is malformed.")
    tenant_id = str(tenant.public_id)
    computed = api_keys.hash_secret(
        tenant_id=tenant_id, lookup_id=parsed.lookup_id, secret=parsed.secret
    )
    key = _find_key(tenant_id, parsed.lookup_id)
    stored = key.secret_hash if key is not None else "0" * len(computed)
    if not api_keys.hashes_match(stored, computed) or key is None or key.tenant_id != tenant_id:
        raise CredentialRefused("api_key_invalid", "The API key is not valid.")
    if key.revoked_at is not None:
        raise CredentialRefused("api_key_revoked", "The API key was revoked.")
    if key.is_expired:
        raise CredentialRefused("api_key_expired", "The API key has expired.")
    creator = key.created_by
    if not creator.is_active:
        raise CredentialRefused("api_key_invalid", "The API key's owner is deactivated.")
    granted = frozenset(key.scopes) & permissions_for(creator.role)
    credential = Credential(scheme="api_key", tenant=tenant, permissions=granted, api_key=key)
    services.api_key_record_use(actor=credential.actor(request), key=key)
    return credential


def _find_key(tenant_id: str, lookup_id: str) -> Any:
    """The key (with its creator) by lookup id: from this process's cache while the
    organization's credential epoch is unchanged, else from the database."""
    try:
        epoch = events.credential_epoch(tenant_id)
    except Exception:
        logger.warning("credential epoch unreadable; API keys read from the database")
        return selectors.api_key_find(lookup_id=lookup_id)
    now = time.monotonic()
    entry = _key_cache.get((tenant_id, lookup_id))
    if entry is not None and entry[1] == epoch and now - entry[0] < KEY_CACHE_MAX_AGE_SECONDS:
        return entry[2]
    # The epoch was read before the row: a change committed in between replaces the epoch
    # again after its commit, so this entry is dropped at the next request.
    key = selectors.api_key_find(lookup_id=lookup_id)
    if key is not None and key.tenant_id == tenant_id:
        with _key_cache_lock:
            if len(_key_cache) >= KEY_CACHE_MAX_ENTRIES:
                _key_cache.clear()
            _key_cache[(tenant_id, lookup_id)] = (now, epoch, key)
    return key


def clear_key_cache() -> None:
    """Drop this process's cached keys."""
    with _key_cache_lock:
        _key_cache.clear()


def authenticate_credential(raw: str, tenant: Tenant, request: Any = None) -> Credential:
    """Verify a JWT or an API key (told apart by the key prefix); for the WebSocket gateway."""
    if api_keys.looks_like_key(raw):
        return verify_api_key(raw, tenant, request)
    return verify_jwt(raw, tenant)


def _credential_from_header(request: Any, keyword: str) -> str | None:
    header = authentication.get_authorization_header(request).split()
    if not header or header[0].lower() != keyword.lower().encode():
        return None
    if len(header) != 2:
        raise CredentialRefused(
            "credentials_malformed", f"Send `Authorization: {keyword} <credential>`."
        )
    try:
        return header[1].decode("ascii")
    except UnicodeDecodeError as error:
        raise CredentialRefused("credentials_malformed", "The credential is not ASCII.") from error


class BearerTokenAuthentication(authentication.BaseAuthentication):
    """`Authorization: Bearer <access token>` (RS256 JWT from POST /api/v1/auth/token)."""

    def authenticate(self, request: Any) -> tuple[Any, Credential] | None:
        raw = _credential_from_header(request, BEARER)
        if raw is None:
            return None
        try:
            credential = verify_jwt(raw, _tenant_or_refuse())
        except CredentialRefused as error:
            _record_failure(request, "jwt", error.error_code)
            raise
        return credential.user, credential

    def authenticate_header(self, request: Any) -> str:
        return f'{BEARER} realm="api"'


class ApiKeyAuthentication(authentication.BaseAuthentication):
    """`Authorization: Api-Key <key>` (keys are created in the portal or over the API)."""

    def authenticate(self, request: Any) -> tuple[Any, Credential] | None:
        raw = _credential_from_header(request, API_KEY)
        if raw is None:
            return None
        try:
            credential = verify_api_key(raw, _tenant_or_refuse(), request)
        except CredentialRefused as error:
            _record_failure(request, "api_key", error.error_code)
            raise
        return ApiKeyPrincipal(credential.api_key, credential.permissions), credential

    def authenticate_header(self, request: Any) -> str:
        return API_KEY


class PortalSessionAuthentication(authentication.SessionAuthentication):
    """The portal's own pages calling the API with their session cookie (CSRF enforced)."""

    def authenticate(self, request: Any) -> tuple[Any, Credential] | None:
        result = super().authenticate(request)
        if result is None:
            return None
        user = result[0]
        if getattr(user, "is_support", False):
            # A staff support session reads the portal's pages only (organizations.support).
            raise CredentialRefused(
                "support_session", "A support session cannot use the API; it reads pages only."
            )
        tenant = context.current_tenant()
        if tenant is None or not user.is_active:
            return None
        if tenant.require_two_factor and not user.two_factor_enabled:
            # Held at the two-factor setup (accounts.middleware answers why, when it can): the
            # session is no credential, whatever other Authorization header comes with it.
            return None
        return user, Credential(
            scheme="session", tenant=tenant, permissions=permissions_for(user.role), user=user
        )


# OpenAPI security schemes for the classes above (drf-spectacular finds them by class path).


class BearerScheme(OpenApiAuthenticationExtension):
    target_class = "credentials.authentication.BearerTokenAuthentication"
    name = "jwt"

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        return {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "JWT",
            "description": "An access token from `POST /api/v1/auth/token` (RS256, 15 minutes).",
        }


class ApiKeyScheme(OpenApiAuthenticationExtension):
    target_class = "credentials.authentication.ApiKeyAuthentication"
    name = "apiKey"

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": "`Authorization: Api-Key agp_...` (keys: /api/v1/api-keys/).",
        }


class SessionScheme(OpenApiAuthenticationExtension):
    target_class = "credentials.authentication.PortalSessionAuthentication"
    name = "session"

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        return {
            "type": "apiKey",
            "in": "cookie",
            "name": "sessionid",
            "description": "The portal's own pages (with the CSRF token on writes).",
        }


__all__ = [
    "ApiKeyAuthentication",
    "ApiKeyPrincipal",
    "BearerTokenAuthentication",
    "Credential",
    "CredentialRefused",
    "PortalSessionAuthentication",
    "authenticate_credential",
    "verify_api_key",
    "verify_jwt",
]

"""JWTs: RS256 access and refresh tokens bound to their organization (simplejwt + the keyring).

The algorithm is pinned here, not read from settings: RS256 only, so `alg: none` and HS256
signed with the public key fail at decoding. The `kid` header must name a key of the keyring;
`jku`, `jwk`, `x5u` and `x5c` headers are refused outright (nothing is ever fetched). The
audience and the `tenant` claim are the organization's public id, the issuer its URL, so a token
from one organization is worthless on another's host.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import jwt
from django.conf import settings
from rest_framework_simplejwt.backends import TokenBackend
from rest_framework_simplejwt.exceptions import TokenBackendError, TokenBackendExpiredToken
from rest_framework_simplejwt.tokens import Token

from credentials import keyring

if TYPE_CHECKING:
    from tenants.models import Tenant

ALGORITHM = keyring.ALGORITHM
FORBIDDEN_HEADERS = frozenset({"jku", "jwk", "x5u", "x5c"})
REQUIRED_CLAIMS = ["exp", "iat", "jti", "sub", "aud", "iss", "tenant", "token_type"]


class TokenRefused(TokenBackendError):
    """A token that does not verify; `code` says why (a stable API error code)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def issuer_for(tenant: Tenant) -> str:
    return tenant.url.rstrip("/")


class KeyringTokenBackend(TokenBackend):
    """simplejwt's backend, signing with the keyring's active key and verifying by `kid`."""

    def __init__(self, tenant: Tenant) -> None:
        super().__init__(
            ALGORITHM, audience=str(tenant.public_id), issuer=issuer_for(tenant), leeway=0
        )

    def encode(self, payload: dict[str, Any]) -> str:
        kid, private_key = keyring.signing_key()
        return jwt.encode(
            {**payload, "aud": self.audience, "iss": self.issuer},
            private_key,
            algorithm=ALGORITHM,
            headers={"kid": kid},
        )

    def decode(self, token: Any, verify: bool = True) -> dict[str, Any]:
        if not verify:
            raise TokenRefused("token_invalid", "Unverified decoding is not allowed.")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError as error:
            raise TokenRefused("token_invalid", "The token is malformed.") from error
        if header.get("alg") != ALGORITHM:
            raise TokenRefused("token_invalid", "The token's algorithm is not accepted.")
        if FORBIDDEN_HEADERS & set(header):
            raise TokenRefused("token_invalid", "The token names its own key: refused.")
        kid = header.get("kid")
        public_key = keyring.verifying_key(kid) if isinstance(kid, str) else None
        if public_key is None:
            raise TokenRefused("token_invalid", "The token's signing key is unknown or retired.")
        try:
            return jwt.decode(
                token,
                public_key,
                algorithms=[ALGORITHM],
                audience=self.audience,
                issuer=self.issuer,
                leeway=0,
                options={"require": REQUIRED_CLAIMS, "verify_signature": True},
            )
        except jwt.ExpiredSignatureError as error:
            raise TokenRefused("token_expired", "The token has expired.") from error
        except jwt.ImmatureSignatureError as error:
            raise TokenRefused("token_not_yet_valid", "The token is not valid yet.") from error
        except jwt.InvalidTokenError as error:
            raise TokenRefused("token_invalid", "The token is invalid.") from error


class _OrganizationToken(Token):
    """A simplejwt token verified against (or issued for) one organization."""

    def __init__(self, token: Any = None, *, tenant: Tenant) -> None:
        self._tenant = tenant
        self._backend = KeyringTokenBackend(tenant)
        try:
            super().__init__(token, verify=True)
        except TokenBackendExpiredToken as error:  # pragma: no cover - decode raises ours
            raise TokenRefused("token_expired", "The token has expired.") from error

    @property
    def token_backend(self) -> TokenBackend:  # type: ignore[override]
        return self._backend

    def verify(self) -> None:
        super().verify()
        if self.payload.get("tenant") != str(self._tenant.public_id):
            raise TokenRefused("token_invalid", "The token belongs to another organization.")


class AccessToken(_OrganizationToken):
    token_type = "access"

    @property
    def lifetime(self) -> timedelta:  # type: ignore[override]
        return timedelta(seconds=settings.JWT_ACCESS_TOKEN_LIFETIME_SECONDS)


class RefreshToken(_OrganizationToken):
    token_type = "refresh"

    @property
    def lifetime(self) -> timedelta:  # type: ignore[override]
        return timedelta(seconds=settings.JWT_REFRESH_TOKEN_LIFETIME_SECONDS)


def _claims_for(token: _OrganizationToken, *, tenant: Tenant, user: Any) -> None:
    from core.roles import permissions_for

    token["sub"] = str(user.pk)
    token["tenant"] = str(tenant.public_id)
    token["role"] = user.role
    token["permissions"] = sorted(permissions_for(user.role))


def new_access_token(*, tenant: Tenant, user: Any) -> AccessToken:
    token = AccessToken(tenant=tenant)
    _claims_for(token, tenant=tenant, user=user)
    return token


def new_refresh_token(*, tenant: Tenant, user: Any, family: uuid.UUID) -> RefreshToken:
    token = RefreshToken(tenant=tenant)
    _claims_for(token, tenant=tenant, user=user)
    token["fam"] = str(family)
    return token


def refused(error: Exception) -> TokenRefused:
    """The TokenRefused behind whatever simplejwt raised (it wraps backend errors)."""
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, TokenRefused):
            return cause
        cause = cause.__cause__
    return TokenRefused("token_invalid", "The token is invalid.")


def verify_access_token(raw: str, *, tenant: Tenant) -> dict[str, Any]:
    """The claims of a valid access token for `tenant`; raises TokenRefused otherwise."""
    from rest_framework_simplejwt.exceptions import TokenError

    try:
        return AccessToken(raw, tenant=tenant).payload
    except TokenError as error:
        raise _wrong_type_or(error) from error


def verify_refresh_token(raw: str, *, tenant: Tenant) -> dict[str, Any]:
    from rest_framework_simplejwt.exceptions import TokenError

    try:
        return RefreshToken(raw, tenant=tenant).payload
    except TokenError as error:
        raise _wrong_type_or(error) from error


def _wrong_type_or(error: Exception) -> TokenRefused:
    found = refused(error)
    if found.code == "token_invalid" and "wrong type" in str(error):
        return TokenRefused("token_wrong_type", "This kind of token is not accepted here.")
    return found

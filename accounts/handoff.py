"""One-time sign-in handoff from the public host (just after signup) to the organization's host.

The public host cannot set a session cookie for `<slug>.<domain>` (cookies are host-only), so
after signup it hands the browser a short-lived signed token that the organization's host
redeems once. The token travels in a POST body, never in a URL (which ends up in logs, history
and referrers). It binds the organization's public id, the owner's user id and a random nonce;
the nonce is spent in the cache, so a token works once.

A token names its purpose (`signin` after signup; `support`: a staff support session, see
organizations.support): a token made for one purpose is refused for every other.
"""

from __future__ import annotations

import logging
import secrets

from django.core import signing
from django.core.cache import cache

from tenants.models import Tenant

logger = logging.getLogger(__name__)

SALT = "agentplane.accounts.handoff"
MAX_AGE_SECONDS = 60


class HandoffRefused(Exception):
    """The token is invalid, expired, used, for another organization, or cannot be checked."""


SIGNIN = "signin"


def _salt(purpose: str) -> str:
    return SALT if purpose == SIGNIN else f"{SALT}.{purpose}"


def handoff_token_make(*, tenant: Tenant, user_id: int, purpose: str = SIGNIN) -> str:
    payload = {"tenant": str(tenant.public_id), "user": user_id, "nonce": secrets.token_urlsafe(18)}
    return signing.dumps(payload, salt=_salt(purpose), compress=False)


def nonce_key(tenant: Tenant, nonce: str, purpose: str = SIGNIN) -> str:
    # Carries the tenant id, like every cache key: user ids and nonces mean nothing without it.
    return f"handoff:{purpose}:{tenant.public_id}:{nonce}"


def handoff_token_redeem(*, tenant: Tenant, token: str, purpose: str = SIGNIN) -> int:
    """Check the token for `tenant` and `purpose`, spend it, and return the id it carries (the
    user it signs in; for `support`, the support session)."""
    try:
        payload = signing.loads(token, salt=_salt(purpose), max_age=MAX_AGE_SECONDS)
    except signing.SignatureExpired as error:
        raise HandoffRefused("expired") from error
    except signing.BadSignature as error:
        raise HandoffRefused("bad signature") from error
    if not isinstance(payload, dict) or payload.get("tenant") != str(tenant.public_id):
        raise HandoffRefused("another organization")
    nonce, user_id = payload.get("nonce"), payload.get("user")
    if not isinstance(nonce, str) or not nonce or not isinstance(user_id, int):
        raise HandoffRefused("malformed")
    try:
        # `add` is atomic in Redis (SET NX): of two concurrent redemptions, one wins.
        first_use = cache.add(nonce_key(tenant, nonce, purpose), 1, timeout=MAX_AGE_SECONDS * 2)
    except Exception as error:
        # Fail closed: without the cache we cannot prove the token is unused. The owner can
        # still log in with their password.
        logger.warning("handoff refused: cache unavailable", exc_info=True)
        raise HandoffRefused("cache unavailable") from error
    if not first_use:
        raise HandoffRefused("already used")
    return user_id

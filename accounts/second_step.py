"""A sign-in between its password and its code: what the session remembers meanwhile.

The session holds no signed-in user until the code is verified (no `_auth_user_id`: every page
and the API see an anonymous visitor); it holds which user passed the password step, for which
organization, when, and the user's session hash then (a password changed meanwhile ends it).
"""

from __future__ import annotations

import hmac
import time
from dataclasses import dataclass

from django.conf import settings
from django.http import HttpRequest

from accounts import selectors
from accounts.models import User
from tenants import context

SESSION_KEY = "accounts.second_step"


@dataclass(frozen=True)
class Pending:
    user: User
    next_url: str


def _owner() -> str:
    tenant = context.current_tenant()
    return str(tenant.public_id) if tenant is not None else "platform"


def start(request: HttpRequest, user: User, *, next_url: str) -> None:
    """Remember that `user` gave the right password; the code comes next."""
    request.session.cycle_key()  # a new session id, as a real sign-in would get (fixation)
    request.session[SESSION_KEY] = {
        "user": user.pk,
        "owner": _owner(),
        "hash": user.get_session_auth_hash(),
        "since": time.time(),
        "next": next_url,
        "failures": 0,
    }


def pending_user_id(request: HttpRequest) -> int | None:
    """The user id of the sign-in waiting for its code (for throttling), unverified."""
    state = request.session.get(SESSION_KEY)
    user_id = state.get("user") if isinstance(state, dict) else None
    return user_id if isinstance(user_id, int) else None


def read(request: HttpRequest) -> Pending | None:
    """The sign-in waiting for its code in this organization, if still valid."""
    state = request.session.get(SESSION_KEY)
    if not isinstance(state, dict) or state.get("owner") != _owner():
        return None
    if time.time() - float(state.get("since", 0)) > settings.TWO_FACTOR_PENDING_SECONDS:
        return None
    user_id = pending_user_id(request)
    user = selectors.member_get_active(user_id=user_id) if user_id is not None else None
    if user is None or not user.two_factor_enabled:
        return None
    if not hmac.compare_digest(str(state.get("hash", "")), user.get_session_auth_hash()):
        return None
    return Pending(user=user, next_url=str(state.get("next", "")))


def count_failure(request: HttpRequest) -> int:
    """One more wrong code; returns how many so far."""
    state = dict(request.session[SESSION_KEY])
    state["failures"] = int(state.get("failures", 0)) + 1
    request.session[SESSION_KEY] = state
    return state["failures"]


def clear(request: HttpRequest) -> None:
    request.session.pop(SESSION_KEY, None)

"""Throttles for the forms that attackers hammer: sign-in and its code, signup, password reset."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from core import errors
from tenants import ratelimit


@dataclass(frozen=True)
class Limit:
    scope: str
    rate: str  # tenants.ratelimit.parse_rate's notation: "10/m", "20/5m", "100/h"
    key: Callable[[HttpRequest], str]
    # Sign-in forms count as the `auth` resource: staff's override of it for the organization
    # replaces `rate` (docs/billing.md).
    resource: str | None = "auth"


def by_ip(request: HttpRequest) -> str:
    return f"ip:{request.META.get('REMOTE_ADDR', '')}"


def by_login(request: HttpRequest) -> str:
    # Users are per organization; tenants.ratelimit adds the organization to every key.
    return f"login:{request.POST.get('username', '').strip().lower()[:254]}"


def by_pending_account(request: HttpRequest) -> str:
    """The account whose sign-in waits for its code (the password step passed)."""
    from accounts import second_step

    return f"login-code:{second_step.pending_user_id(request)}"


def by_user(request: HttpRequest) -> str:
    return f"user:{getattr(request.user, 'pk', '')}"


def throttle_posts(*limits: Limit) -> Callable:
    """Count every POST against each limit; refuse with 429 and Retry-After past any of them.

    Fails closed: when the counters (Redis) cannot be reached, the POST is refused too.
    """

    def decorator(view: Callable) -> Callable:
        @wraps(view)
        def wrapped(request: HttpRequest, *args, **kwargs) -> HttpResponse:
            if request.method == "POST":
                for limit in limits:
                    try:
                        ratelimit.hit(
                            scope=limit.scope,
                            key=limit.key(request),
                            rate=limit.rate,
                            fail_closed=True,
                            resource=limit.resource,
                        )
                    except errors.RateLimited as refusal:
                        return _too_many(request, refusal.retry_after, unavailable=False)
                    except errors.RateLimiterUnavailable as refusal:
                        return _too_many(request, refusal.retry_after, unavailable=True)
            return view(request, *args, **kwargs)

        return wrapped

    return decorator


def _too_many(request: HttpRequest, retry_after: int, *, unavailable: bool) -> HttpResponse:
    response = render(
        request, "429.html", {"retry_after": retry_after, "unavailable": unavailable}, status=429
    )
    response["Retry-After"] = str(retry_after)
    return response


LOGIN_LIMITS = (
    Limit("portal.login.ip", "30/5m", by_ip),
    Limit("portal.login.account", "10/5m", by_login),
)
STAFF_LOGIN_LIMITS = (
    Limit("admin.login.ip", "20/5m", by_ip),
    Limit("admin.login.account", "10/5m", by_login),
)
# The code step of a sign-in: as many tries as the password step, per address and per account.
LOGIN_CODE_LIMITS = (
    Limit("portal.login_code.ip", "30/5m", by_ip),
    Limit("portal.login_code.account", "10/5m", by_pending_account),
)
STAFF_LOGIN_CODE_LIMITS = (
    Limit("admin.login_code.ip", "20/5m", by_ip),
    Limit("admin.login_code.account", "10/5m", by_pending_account),
)
# Proving it is you (password or code) to turn two-factor authentication off or renew its codes.
TWO_FACTOR_PROOF_LIMITS = (Limit("two_factor.proof.account", "10/5m", by_user),)
SIGNUP_LIMITS = (Limit("portal.signup.ip", "10/h", by_ip),)
PASSWORD_RESET_LIMITS = (Limit("portal.password_reset.ip", "10/h", by_ip),)

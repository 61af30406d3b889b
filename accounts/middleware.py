"""Signed-in sessions: remember when and from what browser each started (the profile page lists a
person's sessions with it; one session write per session, no table of its own), and hold back a
person who must set up two-factor authentication first."""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.contrib import messages
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect
from django.urls import reverse
from django.utils import timezone

from accounts.selectors import SESSION_META_KEY


class SessionMetaMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        user = getattr(request, "user", None)
        if (
            getattr(request, "tenant", None) is not None
            and user is not None
            and user.is_authenticated
            and SESSION_META_KEY not in request.session
        ):
            request.session[SESSION_META_KEY] = {
                "since": timezone.now().strftime("%Y-%m-%d %H:%M"),
                "agent": request.headers.get("User-Agent", "")[:200],
                "ip": request.META.get("REMOTE_ADDR", ""),
            }
        return self.get_response(request)


# What a person who must set up two-factor authentication may still open: the setup itself, the
# recovery codes it shows, signing out, and the portal's CSS and scripts.
OPEN_WHILE_ENROLLING = {
    "tenant": ("/profile/two-factor/", "/logout/", "/static/"),
    "platform": ("/admin/two-factor/", "/admin/logout/", "/static/"),
}
SETUP_URL = {"tenant": "accounts:two-factor-setup", "platform": "admin:two-factor-setup"}
REQUIRED_MESSAGE = "Set up two-factor authentication to continue: {who} requires it."


def two_factor_required(request: HttpRequest) -> bool:
    """Whether the signed-in person must set up two-factor authentication before anything else:
    a member of an organization that requires it, or staff where STAFF_REQUIRE_TWO_FACTOR."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated or user.two_factor_enabled:
        return False
    tenant = getattr(request, "tenant", None)
    if tenant is not None:
        return tenant.require_two_factor
    return user.is_staff and settings.STAFF_REQUIRE_TWO_FACTOR


class TwoFactorRequiredMiddleware:
    """Send a person who must set up two-factor authentication to its setup page, from every
    other page, and refuse the API to their browser session. Integrations' credentials (API
    keys, JWTs: an Authorization header) are not concerned."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if not two_factor_required(request):
            return self.get_response(request)
        site = "tenant" if getattr(request, "tenant", None) is not None else "platform"
        if request.path.startswith(OPEN_WHILE_ENROLLING[site]):
            return self.get_response(request)
        if request.path.startswith("/api/"):
            if "HTTP_AUTHORIZATION" in request.META:
                return self.get_response(request)
            return JsonResponse(
                {
                    "error": {
                        "code": "two_factor_required",
                        "message": "Set up two-factor authentication in the portal first.",
                        "detail": None,
                    }
                },
                status=403,
            )
        who = request.tenant.name if site == "tenant" else "the platform"
        messages.warning(request, REQUIRED_MESSAGE.format(who=who))
        # The request's own URL map (the public host's has admin): not applied yet this early.
        return redirect(reverse(SETUP_URL[site], urlconf=getattr(request, "urlconf", None)))

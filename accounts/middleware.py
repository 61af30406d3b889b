"""Remember, in a signed-in session itself, when and from what browser it started (the profile
page lists a person's sessions with it). One session write per session, no table of its own."""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse
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

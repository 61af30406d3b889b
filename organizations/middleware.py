"""A support session on an organization's host: checked on every request, read-only, recorded;
and the banner every page of the organization shows while one is open (organizations.support)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.contrib import messages
from django.contrib.auth.models import AnonymousUser
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.urls import reverse

from core.roles import SUPPORT_END
from organizations import support
from tenants.middleware import error_response

READ_METHODS = {"GET", "HEAD", "OPTIONS"}


class SupportSessionMiddleware:
    """After authentication and messages: a browser holding a support session's id acts as its
    `SupportPrincipal` while the session is open, and is signed out at its first request after
    the session ended or expired. Only reads pass (and ending the session itself); every
    request, refused or not, is recorded in both logs."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        tenant = getattr(request, "tenant", None)
        if tenant is None or support.SESSION_KEY not in request.session:
            return self.get_response(request)
        if request.path == reverse("organizations:support-start"):
            return self.get_response(request)  # a new hand-off replaces this session
        session = support.support_session_current(
            tenant=tenant, session_id=request.session[support.SESSION_KEY]
        )
        if session is None:
            return self._ended(request)
        principal = support.SupportPrincipal(session)
        request.user = principal
        ending = request.path == reverse("organizations:support-end", args=[session.pk])
        if request.method in READ_METHODS or (ending and request.method == "POST"):
            response = self.get_response(request)
            refused = False
        else:
            response = error_response(
                request,
                403,
                "support_read_only",
                "A support session can read this organization's pages, not change anything.",
            )
            refused = True
        support.support_request_record(
            request=request, principal=principal, status=response.status_code, refused=refused
        )
        return response

    def _ended(self, request: HttpRequest) -> HttpResponse:
        request.session.flush()
        request.user = AnonymousUser()
        if request.path.startswith("/api/"):
            return error_response(
                request, 401, "support_session_ended", "The support session has ended."
            )
        messages.info(request, "The support session has ended.")
        return redirect("accounts:login")


def banner(request: HttpRequest) -> dict[str, Any]:
    """Template context: the organization's open support sessions, and which of them this
    visitor may end (the owner: any; the staff member: their own)."""
    tenant = getattr(request, "tenant", None)
    user = getattr(request, "user", None)
    if tenant is None or user is None or not user.is_authenticated:
        return {}
    sessions = support.support_sessions_active(tenant)
    if getattr(user, "is_support", False):
        endable = {user.session_id}
    else:
        endable = {item.id for item in sessions} if user.can(SUPPORT_END) else set()
    return {
        "support_sessions": [{"session": item, "can_end": item.id in endable} for item in sessions],
        "is_support": getattr(user, "is_support", False),
    }

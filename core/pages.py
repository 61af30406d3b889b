"""The portal pages' one permission gate: the same permission names the API's `required` maps use.

    @requires("agents:read")
    def agent_list(request, actor): ...

Anonymous visitors go to sign in; a signed-in user without the permission gets a 403. The view
receives the acting principal, ready for the services.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse

from core.actors import Actor


def require(actor: Actor, permission: str) -> None:
    """403 unless `actor` holds `permission` (pages whose writes a service checks and records,
    but which must refuse before rendering, for example a form that failed to parse)."""
    if not actor.can(permission):
        raise PermissionDenied


def requires(permission: str) -> Callable:
    """Signed in, and holding `permission` (else 403); the view gets the actor."""

    def decorate(view: Callable) -> Callable:
        @login_required
        @wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            actor = Actor.from_request(request)
            require(actor, permission)
            return view(request, actor, *args, **kwargs)

        return wrapper

    return decorate


def resource_url(resource_type: str, resource_id: Any, details: Any = None) -> str | None:
    """The portal page of an audited resource (by URL name: core imports no app), or None.

    The audit log and the dashboard's activity link their resources with it.
    """
    from urllib.parse import urlencode

    from django.urls import NoReverseMatch, reverse

    details = details if isinstance(details, dict) else {}
    try:
        if resource_type == "agent" and resource_id:
            return reverse("agents:agent-detail", args=[resource_id])
        if resource_type == "instance" and details.get("agent_id"):
            return reverse("agents:agent-detail", args=[details["agent_id"]])
        if resource_type == "config" and resource_id:
            return reverse("agents:config-history") + "?" + urlencode({"key": resource_id})
        if resource_type == "api_key":
            return reverse("credentials:api-key-list")
        if resource_type in {"user", "invitation"}:
            return reverse("accounts:members")
        if resource_type == "alert":
            return reverse("audit:alert-list")
    except NoReverseMatch:
        return None
    return None

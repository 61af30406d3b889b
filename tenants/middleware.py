"""Route every request to its organization by host, before anything else touches the database."""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render

from tenants import context, routing
from tenants.models import TenantStatus


def error_response(request: HttpRequest, status: int, code: str, message: str) -> HttpResponse:
    """The API's JSON error shape for API paths, a plain page for people."""
    if request.path.startswith("/api/"):
        return JsonResponse(
            {"error": {"code": code, "message": message, "detail": None}}, status=status
        )
    return render(
        request, "errors/tenant_unavailable.html", {"code": code, "message": message}, status=status
    )


class TenantRoutingMiddleware:
    """Resolve the tenant from the host (cached), enter its context once, refuse suspended ones.

    The context is not reset when the response leaves: a streamed response is consumed after the
    middleware returns and must still read its own tenant's schema. Every request enters its own
    context first, so nothing carries over to the next one.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        host = request.get_host().rsplit(":", 1)[0].lower()
        # The portal's own CSS and scripts belong to no organization: served on every host, also
        # a suspended or unknown one (whose error page needs them), without a tenant lookup.
        if host == settings.PORTAL_DOMAIN or request.path.startswith(settings.STATIC_URL):
            context.activate(None)
            request.tenant = None
            request.urlconf = settings.PUBLIC_SCHEMA_URLCONF
            return self.get_response(request)

        tenant = routing.lookup(host)
        if tenant is None:
            context.activate(None)
            request.tenant = None
            request.urlconf = settings.PUBLIC_SCHEMA_URLCONF
            return error_response(
                request, 404, "organization_not_found", "There is no organization at this address."
            )
        context.activate(tenant)
        request.tenant = tenant
        if tenant.status == TenantStatus.SUSPENDED:
            return error_response(
                request,
                403,
                "organization_suspended",
                "This organization is suspended. Contact its owner or platform support.",
            )
        return self.get_response(request)

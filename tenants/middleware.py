"""Route every request to its organization by host, before anything else touches the database."""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.utils import timezone

from tenants import context, routing
from tenants.models import Tenant, TenantStatus


def error_response(request: HttpRequest, status: int, code: str, message: str) -> HttpResponse:
    """The API's JSON error shape for API paths, a plain page for people."""
    if request.path.startswith("/api/"):
        return JsonResponse(
            {"error": {"code": code, "message": message, "detail": None}}, status=status
        )
    return render(
        request, "errors/tenant_unavailable.html", {"code": code, "message": message}, status=status
    )


# While a deletion is pending, an organization is suspended except for these pages: its owner
# signs in to download the export (the pages themselves check who asks).
PATHS_OPEN_WHILE_DELETING = ("/login/", "/logout/", "/deletion/", "/static/")


def _open_while_deleting(request: HttpRequest, tenant) -> bool:
    return tenant.is_deletion_pending and request.path.startswith(PATHS_OPEN_WHILE_DELETING)


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
        if tenant.writes_paused_until is not None and tenant.pause_remaining(timezone.now()) > 0:
            # Its schema is switching shards (scaling.moves): come back in a moment.
            return moving_response(request)
        if tenant.status == TenantStatus.SUSPENDED and not _open_while_deleting(request, tenant):
            return error_response(
                request,
                403,
                "organization_suspended",
                "This organization is suspended. Contact its owner or platform support.",
            )
        response = self.get_response(request)
        if response.status_code >= 500 and _moved_meanwhile(tenant):
            # It reached the database after a move had locked its tables, and failed when the
            # old copy was dropped: nothing was written, so the client may simply retry.
            return moving_response(request)
        return response


def moving_response(request: HttpRequest) -> HttpResponse:
    response = error_response(
        request,
        503,
        "organization_moving",
        "This organization is moving to another database; retry in a moment.",
    )
    response["Retry-After"] = "1"
    return response


def _moved_meanwhile(tenant: Tenant) -> bool:
    """Whether the organization is being moved, or was moved since its routing was read (one
    query, only after a server error)."""
    with context.public_context():
        row = (
            Tenant.objects.filter(pk=tenant.pk).values_list("shard", "writes_paused_until").first()
        )
    if row is None:
        return False
    shard, paused_until = row
    return shard != tenant.shard or (paused_until is not None and paused_until > timezone.now())

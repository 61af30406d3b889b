"""Two small JSON views, identical in every variant: one without a query, one with one query."""

from __future__ import annotations

from django.db import connection
from django.http import HttpRequest, JsonResponse

from accounts.models import User


def ping(request: HttpRequest) -> JsonResponse:
    """No database work at all: what routing alone costs."""
    return JsonResponse({"ok": True, "schema": connection.schema_name})


def first_user(request: HttpRequest) -> JsonResponse:
    """One small query, in the tenant's schema when routed, in `public` when not."""
    row = User.objects.order_by("pk").values_list("pk", "email").first()
    return JsonResponse({"schema": connection.schema_name, "user": row})

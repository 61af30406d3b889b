"""Probe views for isolation tests: report the schema a request really ran in."""

from django.db import IntegrityError, connection, transaction
from django.http import HttpRequest, JsonResponse
from django.urls import include, path

from accounts.models import User
from tenants import context


def schema(request: HttpRequest) -> JsonResponse:
    return JsonResponse(
        {
            "schema": context.database_schema(),
            "tenant": request.tenant.slug if request.tenant else None,
            "users": sorted(User.objects.values_list("email", flat=True)),
        }
    )


def fail_mid_transaction(request: HttpRequest) -> JsonResponse:
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            raise IntegrityError("failed halfway")
    except IntegrityError:
        pass
    return JsonResponse({"failed": True}, status=500)


urlpatterns = [
    path("probe/schema/", schema),
    path("probe/fail/", fail_mid_transaction),
    path("", include("portal.urls_tenant")),
]

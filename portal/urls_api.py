"""The API, version 1 (`/api/v1/`): each app adds one `include` of its `api_urls` here."""

from django.urls import include, path

urlpatterns = [
    path("", include("credentials.api_urls")),
    path("", include("vault.api_urls")),
    path("", include("tenants.api_urls")),
    path("", include("agents.api_urls")),
    path("", include("audit.api_urls")),
    path("", include("gateway.api_urls")),
    path("", include("billing.api_urls")),
    path("", include("tools.api_urls")),
    path("", include("autoscaler.api_urls")),
]

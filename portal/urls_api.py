"""The API, version 1 (`/api/v1/`): each app adds one `include` of its `api_urls` here."""

from django.urls import include, path

urlpatterns = [
    path("", include("credentials.api_urls")),
    path("", include("tenants.api_urls")),
]

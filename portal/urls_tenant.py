"""URLs of an organization's host: the portal, and later the API and the gateway."""

from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from core import api
from credentials.api import jwks
from portal import operations

handler400 = api.bad_request
handler403 = api.permission_denied
handler404 = api.page_not_found
handler500 = api.server_error

urlpatterns = [
    path("api/v1/", include("portal.urls_api")),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerSplitView.as_view(url_name="api-schema"), name="api-docs"),
    # Unknown API paths answer in the API's error shape, whatever DEBUG says.
    re_path(r"^api/", api.api_not_found),
    path(".well-known/jwks.json", jwks, name="jwks"),
    path("metrics", operations.metrics_view, name="metrics"),
    path("", include("portal.urls")),
    path("", include("accounts.urls")),
    path("api-keys/", include("credentials.urls")),
    path("audit/", include("audit.urls")),
    path("", include("billing.urls")),
    path("", include("organizations.urls")),
    path("", include("agents.urls")),
    path("tools/", include("tools.urls")),
    path("", include("vault.urls")),
]

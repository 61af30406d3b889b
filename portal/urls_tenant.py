"""URLs of an organization's host: the portal, and later the API and the gateway."""

from django.urls import include, path

urlpatterns = [
    path("", include("portal.urls")),
    path("", include("accounts.urls")),
]

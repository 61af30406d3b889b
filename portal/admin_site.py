"""Django admin for platform staff (public host only), with its sign-in throttled."""

from __future__ import annotations

from django.contrib import admin
from django.contrib.admin.apps import AdminConfig
from django.http import HttpRequest, HttpResponse

from accounts.throttle import STAFF_LOGIN_LIMITS, throttle_posts


class PlatformAdminSite(admin.AdminSite):
    site_header = "AgentPlane platform"
    site_title = "AgentPlane staff"
    index_title = "Organizations, plans and platform settings"

    def login(self, request: HttpRequest, extra_context: dict | None = None) -> HttpResponse:
        return throttle_posts(*STAFF_LOGIN_LIMITS)(super().login)(request, extra_context)


class PlatformAdminConfig(AdminConfig):
    """Django's admin, with `PlatformAdminSite` as the site every app registers with."""

    default = False
    default_site = "portal.admin_site.PlatformAdminSite"

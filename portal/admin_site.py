"""Django admin for platform staff (public host only): its sign-in throttled, with the code step of
two-factor authentication, and the staff's own two-factor pages (`/admin/two-factor/`)."""

from __future__ import annotations

from django.contrib import admin
from django.contrib.admin.apps import AdminConfig
from django.contrib.auth import REDIRECT_FIELD_NAME
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse

from accounts.throttle import STAFF_LOGIN_LIMITS, throttle_posts


class PlatformAdminSite(admin.AdminSite):
    site_header = "AgentPlane platform"
    site_title = "AgentPlane staff"
    index_title = "Organizations, plans and platform settings"

    def login(self, request: HttpRequest, extra_context: dict | None = None) -> HttpResponse:
        return throttle_posts(*STAFF_LOGIN_LIMITS)(self._login)(request, extra_context)

    def _login(self, request: HttpRequest, extra_context: dict | None = None) -> HttpResponse:
        # Django's AdminSite.login, with the two-step view.
        if request.method == "GET" and self.has_permission(request):
            return HttpResponseRedirect(reverse("admin:index", current_app=self.name))
        context = {
            **self.each_context(request),
            "title": "Log in",
            "subtitle": None,
            "app_path": request.get_full_path(),
            "username": request.user.get_username(),
        }
        if REDIRECT_FIELD_NAME not in request.GET and REDIRECT_FIELD_NAME not in request.POST:
            context[REDIRECT_FIELD_NAME] = reverse("admin:index", current_app=self.name)
        context.update(extra_context or {})
        request.current_app = self.name
        # Imported here: this module loads with the app registry, before any model.
        from portal.admin_two_factor import StaffLoginView

        return StaffLoginView.as_view(extra_context=context)(request)

    def get_urls(self):
        from portal.admin_two_factor import urls

        return [*urls(self), *super().get_urls()]


class PlatformAdminConfig(AdminConfig):
    """Django's admin, with `PlatformAdminSite` as the site every app registers with."""

    default = False
    default_site = "portal.admin_site.PlatformAdminSite"

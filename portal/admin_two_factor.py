"""Two-factor authentication in Django admin: staff sign in with a code after their password, and
set it up, renew recovery codes or turn it off at `/admin/two-factor/` (accounts' views, with
admin's templates)."""

from __future__ import annotations

from functools import partial

from django.contrib.admin.forms import AdminAuthenticationForm
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import path
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from accounts import views as account_views
from accounts.throttle import STAFF_LOGIN_CODE_LIMITS, TWO_FACTOR_PROOF_LIMITS, throttle_posts


class StaffLoginView(account_views.LoginView):
    """The portal's two-step sign-in, with Django admin's form (staff only) and template."""

    template_name = "admin/login.html"
    authentication_form = AdminAuthenticationForm
    redirect_authenticated_user = False
    next_page = "admin:index"
    code_url_name = "admin:login-code"


def _site(admin_site) -> account_views.TwoFactorSite:
    return account_views.TwoFactorSite(
        login_url="admin:login",
        account_url="admin:two-factor",
        codes_url="admin:two-factor-codes",
        login_code_template="admin/login_code.html",
        setup_template="admin/two_factor_setup.html",
        codes_template="admin/two_factor_codes.html",
        context=admin_site.each_context,
    )


def _overview(request: HttpRequest, *, admin_site) -> HttpResponse:
    context = {
        **admin_site.each_context(request),
        "title": "Two-factor authentication",
        **account_views.two_factor_state(request),
    }
    return TemplateResponse(request, "admin/two_factor.html", context)


def urls(admin_site) -> list:
    """The admin site's two-factor URLs (`admin:login-code`, `admin:two-factor` ...)."""
    site = _site(admin_site)
    staff_only = admin_site.admin_view
    proof_post = throttle_posts(*TWO_FACTOR_PROOF_LIMITS)
    return [
        path(
            "login/code/",
            throttle_posts(*STAFF_LOGIN_CODE_LIMITS)(partial(account_views.login_code, site=site)),
            name="login-code",
        ),
        path(
            "two-factor/",
            staff_only(require_GET(partial(_overview, admin_site=admin_site))),
            name="two-factor",
        ),
        path(
            "two-factor/setup/",
            staff_only(
                require_http_methods(["GET", "POST"])(
                    partial(account_views.two_factor_setup_page, site=site)
                )
            ),
            name="two-factor-setup",
        ),
        path(
            "two-factor/recovery-codes/",
            staff_only(require_GET(partial(account_views.two_factor_codes_page, site=site))),
            name="two-factor-codes",
        ),
        path(
            "two-factor/recovery-codes/new/",
            staff_only(
                proof_post(
                    require_POST(partial(account_views.recovery_codes_regenerate_action, site=site))
                )
            ),
            name="two-factor-codes-regenerate",
        ),
        path(
            "two-factor/disable/",
            staff_only(
                proof_post(
                    require_POST(partial(account_views.two_factor_disable_action, site=site))
                )
            ),
            name="two-factor-disable",
        ),
    ]

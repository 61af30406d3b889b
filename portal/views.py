"""The portal shell: the public landing and signup pages, and an organization's dashboard."""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods

from accounts import selectors as account_selectors
from accounts.handoff import handoff_token_make
from agents import selectors as agent_selectors
from billing import limits as billing_limits
from core.actors import Actor
from core.errors import DomainError
from core.pages import requires
from core.roles import ORGANIZATION_DELETE
from organizations.services import (
    organization_deletion_request,
    organization_export,
    provision_tenant,
    validate_new_tenant,
)
from portal import activity
from portal.forms import OrganizationJumpForm, SignupForm
from tenants import context, residency, routing
from tenants.models import Tenant
from tenants.validators import validate_slug


def _host_suffix() -> str:
    port = f":{settings.PORTAL_PORT}" if settings.PORTAL_PORT else ""
    return f".{settings.PORTAL_DOMAIN}{port}"


def _landing(request: HttpRequest, jump_form: OrganizationJumpForm, status: int) -> HttpResponse:
    context_data = {"jump_form": jump_form, "host_suffix": _host_suffix()}
    return render(request, "portal/landing.html", context_data, status=status)


@require_GET
def landing(request: HttpRequest) -> HttpResponse:
    return _landing(request, OrganizationJumpForm(), 200)


@require_GET
def organization_go(request: HttpRequest) -> HttpResponse:
    """ "Go to your organization": from its address (slug) to its login page."""
    form = OrganizationJumpForm(request.GET)
    if not form.is_valid():
        return _landing(request, form, 400)
    slug = form.cleaned_data["slug"]
    try:
        validate_slug(slug)
    except ValidationError:
        form.add_error("slug", "That is not a valid organization address.")
        return _landing(request, form, 400)
    tenant = routing.lookup(f"{slug}.{settings.PORTAL_DOMAIN}")
    if tenant is None:
        form.add_error("slug", "There is no organization at this address.")
        return _landing(request, form, 404)
    return redirect(
        tenant.url.rstrip("/") + reverse("accounts:login", urlconf=settings.ROOT_URLCONF)
    )


SIGNUP_PLAN = "free"


def _show_service_errors(form: SignupForm, error: ValidationError) -> None:
    """Put the service's errors next to their fields (fields that have one already keep it)."""
    if not hasattr(error, "error_dict"):
        form.add_error(None, error)
        return
    for key, errors in error.error_dict.items():
        field = SignupForm.SERVICE_FIELDS.get(key)
        if field is None or field not in form.errors:
            form.add_error(field, errors)


def _check_with_the_service(form: SignupForm) -> None:
    """When the form itself is refused, still show what the service would say about the rest
    (slug taken, weak password ...), so that every mistake shows at once. Writes nothing."""
    data = form.data
    try:
        validate_new_tenant(
            slug=data.get("slug", "").strip().lower(),
            name=data.get("name", ""),
            owner_email=data.get("owner_email", "").strip().lower(),
            owner_password=data.get("password", ""),
            region=data.get("region", ""),
            plan_slug=SIGNUP_PLAN,
            residency_policy=data.get("residency_policy") or residency.DEFAULT_POLICY,
        )
    except ValidationError as error:
        _show_service_errors(form, error)


@require_http_methods(["GET", "POST"])
def signup(request: HttpRequest) -> HttpResponse:
    form = SignupForm(request.POST or None)
    if request.method == "POST" and not form.is_valid():
        _check_with_the_service(form)
    elif request.method == "POST":
        data = form.cleaned_data
        try:
            tenant = provision_tenant(
                actor=Actor.anonymous(request),
                slug=data["slug"],
                name=data["name"],
                owner_email=data["owner_email"],
                owner_password=data["password"],
                region=data["region"],
                plan_slug=SIGNUP_PLAN,
                residency_policy=data["residency_policy"],
                owner_full_name=data["full_name"],
            )
        except residency.ResidencyViolation as error:
            form.add_error("region", error.message)
        except ValidationError as error:
            _show_service_errors(form, error)
        else:
            return _handoff_page(request, tenant, data["owner_email"])
    status = 400 if form.errors else 200
    return render(
        request, "portal/signup.html", {"form": form, "host_suffix": _host_suffix()}, status=status
    )


def _handoff_page(request: HttpRequest, tenant: Tenant, owner_email: str) -> HttpResponse:
    """A page that posts a one-time sign-in token to the new organization's host.

    A redirect would put the token in a URL; a form POST keeps it out of logs and history.
    """
    with context.tenant_context(tenant):
        owner = account_selectors.member_get_active_by_email(email=owner_email)
    action = tenant.url.rstrip("/") + reverse(
        "accounts:login-handoff", urlconf=settings.ROOT_URLCONF
    )
    response = render(
        request,
        "portal/signup_done.html",
        {
            "organization": tenant,
            "action": action,
            "token": handoff_token_make(tenant=tenant, user_id=owner.pk),
        },
    )
    response["Cache-Control"] = "no-store"
    return response


@require_GET
@requires("org:read")
def dashboard(request: HttpRequest, actor: Actor) -> HttpResponse:
    tenant = request.tenant
    plan = tenant.plan
    # The organization's effective limits: the plan's, unless staff set an override.
    effective = agent_selectors.limits_of(tenant)
    limits = [
        ("Agents", f"{effective.max_agents:,}"),
        ("Running instances", f"{effective.max_instances:,}"),
        ("CPU", _cores(effective.max_cpu_millicores)),
        ("Memory", _memory(effective.max_memory_mb)),
        ("Messages per month", f"{effective.messages_per_month:,}"),
        ("API requests per minute", f"{billing_limits.limit_for(tenant, 'api').limit:,}"),
        ("Audit retention", f"{plan.audit_retention_days:,} days"),
    ]
    can_invite = request.user.can("members:invite")
    steps = activity.first_steps(actor=actor)
    return render(
        request,
        "portal/dashboard.html",
        {
            "plan": plan,
            "plan_price": _price(plan.price_monthly_cents),
            "limits": limits,
            "region_label": settings.REGIONS.get(tenant.region, tenant.region),
            "member_count": account_selectors.member_count(),
            "pending_invitation_count": (
                account_selectors.invitation_pending_count() if can_invite else None
            ),
            "can_invite": can_invite,
            "steps": steps,
            "steps_done": sum(step.is_done for step in steps),
            "activity": activity.recent_activity(actor=actor),
        },
    )


def _cores(millicores: int) -> str:
    cores = millicores / 1000
    return f"{cores:,.0f} vCPU" if cores.is_integer() else f"{cores:,.1f} vCPU"


def _memory(megabytes: int) -> str:
    if megabytes >= 1024:
        gigabytes = megabytes / 1024
        return f"{gigabytes:,.0f} GB" if gigabytes.is_integer() else f"{gigabytes:,.1f} GB"
    return f"{megabytes:,} MB"


def _price(cents: int) -> str:
    if cents == 0:
        return "$0 / month"
    return f"${cents / 100:,.0f} / month" if cents % 100 == 0 else f"${cents / 100:,.2f} / month"


# --- Deletion and export (the owner) -------------------------------------------------------------


@never_cache
@require_http_methods(["GET", "POST"])
@requires(ORGANIZATION_DELETE)
def deletion(request: HttpRequest, actor: Actor) -> HttpResponse:
    """Request the organization's deletion (typing its slug), or, once requested, see when it
    happens and download the export meanwhile."""
    tenant = request.tenant
    error = None
    if request.method == "POST":
        try:
            organization_deletion_request(
                actor=actor, tenant=tenant, confirm_slug=request.POST.get("confirm_slug", "")
            )
        except ValidationError as refused:
            error = " ".join(refused.messages)
        else:
            messages.success(request, "Deletion requested: the organization is suspended.")
            return redirect("portal:deletion")
    with context.public_context():
        tenant = Tenant.objects.get(pk=tenant.pk)
    context_ = {"tenant": tenant, "error": error, "grace_days": settings.DELETION_GRACE_DAYS}
    return render(request, "portal/deletion.html", context_, status=400 if error else 200)


@require_GET
@requires(ORGANIZATION_DELETE)
def deletion_export(request: HttpRequest, actor: Actor) -> HttpResponse:
    """The full export (JSON, secrets excluded), streamed."""
    try:
        chunks = organization_export(actor=actor, tenant=request.tenant)
    except DomainError as refused:
        messages.error(request, refused.message)
        return redirect("portal:deletion")
    response = StreamingHttpResponse(
        (chunk.encode() for chunk in chunks), content_type="application/json"
    )
    stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
    response["Content-Disposition"] = (
        f'attachment; filename="{request.tenant.slug}-export-{stamp}.json"'
    )
    response["Cache-Control"] = "no-store"
    return response

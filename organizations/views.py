"""The owner's self-service settings: the plan (posted from the Billing page) and requiring
two-factor authentication (from the Members page); a support session's hand-off from the admin,
and its end (organizations.support)."""

from __future__ import annotations

import logging

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from accounts.handoff import HandoffRefused
from core.actors import Actor
from core.pages import requires
from core.roles import ORGANIZATION_SECURITY
from organizations import services, support
from tenants.models import SupportSession

logger = logging.getLogger(__name__)


@require_POST
@requires("billing:manage")
def plan_change(request: HttpRequest, actor: Actor) -> HttpResponse:
    try:
        tenant = services.plan_change(actor=actor, plan_slug=request.POST.get("plan", ""))
    except ValidationError as error:
        for message in error.message_dict.get("plan", error.messages):
            messages.error(request, message)
    else:
        messages.success(request, f"{tenant.name} is now on the {tenant.plan.name} plan.")
    return redirect("billing:billing")


@require_POST
@requires(ORGANIZATION_SECURITY)
def two_factor_requirement(request: HttpRequest, actor: Actor) -> HttpResponse:
    """The owner's switch on the Members page."""
    required = request.POST.get("required") == "1"
    try:
        services.two_factor_requirement_set(actor=actor, required=required)
    except ValidationError as error:
        messages.error(request, "; ".join(error.messages))
    else:
        messages.success(
            request,
            "Two-factor authentication is now required of every member."
            if required
            else "Two-factor authentication is no longer required.",
        )
    return redirect("accounts:members")


# CSRF protection cannot apply here, as for the signup hand-off (accounts.views.login_handoff):
# the form is posted from the admin on the public host. The signed, single-use, 60-second token
# bound to this organization and to an open support session is what authenticates the request.
@csrf_exempt
@require_POST
@never_cache
def support_start(request: HttpRequest) -> HttpResponse:
    """Enter a support session from the token the admin handed over: whoever was signed in
    in this browser is signed out; the session ends with the support session at the latest."""
    try:
        session = support.support_session_join(
            tenant=request.tenant, token=request.POST.get("token", ""), request=request
        )
    except HandoffRefused as refusal:
        logger.info("support hand-off refused on %s: %s", request.tenant.slug, refusal)
        return render(request, "organizations/support_refused.html", status=400)
    request.session.flush()
    request.session[support.SESSION_KEY] = session.pk
    request.session.set_expiry(session.until)
    return redirect("portal:dashboard")


@require_POST
@requires("org:read")
def support_end(request: HttpRequest, actor: Actor, session_id: int) -> HttpResponse:
    """End a support session now (its banner's button: the owner's, or the staff member's)."""
    try:
        session = support.support_session_end(
            actor=actor, tenant=request.tenant, session_id=session_id
        )
    except SupportSession.DoesNotExist as error:
        raise Http404("No such support session.") from error
    if actor.kind == "support":
        request.session.flush()
        messages.info(request, "You ended the support session.")
        return redirect("accounts:login")
    messages.success(request, f"The support session of {session.staff_display} is ended.")
    return redirect("portal:dashboard")

"""The owner's self-service settings: the plan (posted from the Billing page) and requiring
two-factor authentication (from the Members page)."""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.views.decorators.http import require_POST

from core.actors import Actor
from core.pages import requires
from core.roles import ORGANIZATION_SECURITY
from organizations import services


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

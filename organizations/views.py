"""The owner's self-service plan change, posted from the Billing page."""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.views.decorators.http import require_POST

from core.actors import Actor
from core.pages import requires
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

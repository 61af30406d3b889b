"""Portal page of the autoscaler: an agent's scaling policy form (admins). The agent's page shows
the policy, the state and the last decisions (autoscaler_tags.scaling_card)."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from agents import selectors as agent_selectors
from agents.forms import apply_service_errors
from agents.models import Agent
from autoscaler import selectors, services
from autoscaler.forms import PolicyForm
from core.actors import Actor
from core.pages import requires


@requires(services.POLICY_PERMISSION)
@require_http_methods(["GET", "POST"])
def policy_edit(request: HttpRequest, actor: Actor, agent_id: Any) -> HttpResponse:
    try:
        agent = agent_selectors.agent_get(actor=actor, agent_id=agent_id)
    except Agent.DoesNotExist as error:
        raise Http404("No such agent.") from error
    if request.method == "GET":
        form = PolicyForm(initial=PolicyForm.initial_for(selectors.policy_of(agent)))
        return render(request, "autoscaler/policy_form.html", {"form": form, "agent": agent})
    form = PolicyForm(request.POST)
    if form.is_valid():
        try:
            services.policy_set(actor=actor, agent_id=agent.pk, **form.cleaned_data)
        except ValidationError as error:
            apply_service_errors(form, error)
        else:
            messages.success(request, f"Scaling policy of “{agent.name}” saved.")
            return redirect("agents:agent-detail", agent_id=agent.pk)
    return render(
        request, "autoscaler/policy_form.html", {"form": form, "agent": agent}, status=400
    )

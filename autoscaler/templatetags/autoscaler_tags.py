"""The agent page's scaling card: the policy, the autoscaler's view of now, the last decisions."""

from __future__ import annotations

from typing import Any

from django import template
from django.utils import timezone

from autoscaler import rules, selectors, services
from autoscaler.forms import METRIC_ROWS
from core.actors import Actor

register = template.Library()


@register.inclusion_tag("autoscaler/_card.html", takes_context=True)
def scaling_card(context: dict[str, Any], agent: Any) -> dict[str, Any]:
    actor = Actor.from_request(context["request"])
    state = selectors.state_get(actor=actor, agent=agent, now=timezone.now())
    watched = set(rules.watched(state.policy))
    return {
        "agent": agent,
        "state": state,
        "metrics": [
            {
                "label": label,
                "unit": unit,
                "up": getattr(state.policy, f"{name}_up"),
                "down": getattr(state.policy, f"{name}_down"),
            }
            for name, label, unit in METRIC_ROWS
            if name in watched
        ],
        "can_edit": actor.can(services.POLICY_PERMISSION),
    }

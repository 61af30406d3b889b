"""Live portal pieces: an agent's metrics panel, the activity feed, and the live script."""

from __future__ import annotations

from typing import Any

from django import template

from core.actors import Actor
from gateway import selectors

register = template.Library()


@register.inclusion_tag("gateway/_live_metrics.html", takes_context=True)
def live_metrics(context: dict[str, Any], agent: Any) -> dict[str, Any]:
    actor = Actor.from_request(context["request"])
    return {
        "agent": agent,
        "points": selectors.agent_metrics_recent(actor=actor, agent_id=agent.pk),
        "window": selectors.WINDOW_MINUTES,
    }


@register.inclusion_tag("gateway/_live_feed.html")
def live_feed() -> dict[str, Any]:
    return {}


@register.inclusion_tag("gateway/_live_script.html")
def live_subjects(subjects: str) -> dict[str, Any]:
    """Subscribe the page to `subjects` (space-separated) without any visible element."""
    return {"subjects": subjects}

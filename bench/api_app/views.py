"""The floor of `GET /api/v1/agents/`: a bare Django view reading the same rows with one query.

No authentication, no DRF, no permission, no status or instance counts: the agents of the
routed organization's schema, first page by name, as JSON.
"""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse

from agents.models import Agent

FIELDS = (
    "id",
    "name",
    "type",
    "description",
    "cpu_millicores",
    "memory_mb",
    "permissions",
    "tools",
    "config",
    "created_at",
    "updated_at",
    "created_by",
)


def bare_agents(request: HttpRequest) -> JsonResponse:
    rows = list(Agent.objects.order_by("name", "id").values(*FIELDS)[:50])
    return JsonResponse({"count": len(rows), "results": rows})

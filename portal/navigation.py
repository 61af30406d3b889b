"""The portal's sections. A feature adds its entry when it ships: unbuilt ones are not shown."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.http import HttpRequest
from django.urls import NoReverseMatch, reverse


@dataclass(frozen=True)
class Section:
    label: str
    url_name: str
    permission: str


SECTIONS: list[Section] = [
    Section("Dashboard", "portal:dashboard", "org:read"),
    Section("Members", "accounts:members", "members:read"),
    Section("Agents", "agents:agent-list", "agents:read"),
    Section("Resources", "agents:pool-detail", "agents:read"),
    Section("Config", "agents:config-list", "config:read"),
    Section("Tools", "tools:tool-list", "tools:read"),
    Section("Usage", "billing:usage", "usage:read"),
    Section("Billing", "billing:billing", "billing:read"),
    Section("Audit", "audit:event-list", "audit:read"),
    Section("Knowledge", "vault:knowledge-list", "knowledge:read"),
    Section("Secrets", "vault:secret-list", "secrets:read"),
    Section("API keys", "credentials:api-key-list", "api_keys:manage"),
    Section("Settings", "vault:settings", "settings:write"),
]


def context(request: HttpRequest) -> dict[str, Any]:
    tenant = getattr(request, "tenant", None)
    user = getattr(request, "user", None)
    if tenant is None or user is None or not user.is_authenticated:
        return {"tenant": tenant, "navigation": []}
    items = []
    for section in SECTIONS:
        if not user.can(section.permission):
            continue
        try:
            url = reverse(section.url_name)
        except NoReverseMatch:
            continue
        items.append(
            {
                "label": section.label,
                "url": url,
                "is_current": request.path.startswith(url) if url != "/" else request.path == "/",
            }
        )
    return {"tenant": tenant, "navigation": items}

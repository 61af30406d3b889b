"""Reads of custom tools: one tool (the same not-found for missing and not ours), lists,
versions, and the limits the organization's plan sets for tools."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import PermissionDenied
from django.db.models import F, QuerySet

from core import tool_permissions
from core.actors import Actor
from tenants import context
from tenants.models import Tenant
from tools.models import Tool, ToolVersion


@dataclass(frozen=True)
class ToolLimits:
    max_timeout_ms: int
    max_memory_mb: int
    concurrency: int
    allowed_permissions: frozenset[str]


def limits_of(tenant: Tenant) -> ToolLimits:
    plan = tenant.plan
    return ToolLimits(
        max_timeout_ms=plan.tool_max_timeout_ms,
        max_memory_mb=plan.tool_max_memory_mb,
        concurrency=max(1, plan.tool_concurrency),
        allowed_permissions=frozenset(plan.allowed_tool_permissions or []),
    )


def limits_cached(tenant: Tenant) -> ToolLimits:
    """The limits from the tenant row the request was routed with, if its plan came with it (no
    query: read before a run takes its slot), else fresh from `public`."""
    if Tenant._meta.get_field("plan").is_cached(tenant):
        return limits_of(tenant)
    return limits_get()


def limits_get() -> ToolLimits:
    """The current organization's tool limits, read fresh from `public` (a plan change applies
    at the next save or run)."""
    tenant = context.require_tenant()
    with context.public_context():
        fresh = Tenant.objects.select_related("plan").get(pk=tenant.pk)
    return limits_of(fresh)


def _require(actor: Actor, permission: str) -> None:
    if not actor.can(permission):
        raise PermissionDenied(f"This needs the “{permission}” permission.")


def as_uuid(value: Any) -> uuid.UUID | None:
    try:
        return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))
    except (TypeError, ValueError):
        return None


def tool_list(*, actor: Actor) -> QuerySet[Tool]:
    _require(actor, "tools:read")
    return Tool.objects.order_by("name")


def tool_get(*, actor: Actor, tool_id: Any) -> Tool:
    """One tool of this organization; Tool.DoesNotExist for a bad id, a missing one, or another
    organization's (it is not in this schema)."""
    _require(actor, "tools:read")
    pk = as_uuid(tool_id)
    if pk is None:
        raise Tool.DoesNotExist
    return Tool.objects.get(pk=pk)


def tool_by_name(*, actor: Actor, name: str) -> Tool:
    _require(actor, "tools:read")
    return Tool.objects.get(name=name)


def version_get(*, tool: Tool, number: int | None = None) -> ToolVersion:
    """The tool's version `number` (default: its current one); ToolVersion.DoesNotExist."""
    return ToolVersion.objects.get(tool=tool, number=number or tool.version)


def current_versions(tools: list[Tool]) -> dict[Any, ToolVersion]:
    """Each tool's current version, in one query (for lists)."""
    rows = ToolVersion.objects.filter(tool__in=tools, number=F("tool__version"))
    return {version.tool_id: version for version in rows}


def version_list(*, actor: Actor, tool: Tool) -> QuerySet[ToolVersion]:
    _require(actor, "tools:read")
    return ToolVersion.objects.filter(tool=tool).order_by("-number")


def granted_permissions(version: ToolVersion, limits: ToolLimits) -> list[str]:
    """What a run of this version is handed: what it asked for that the current plan allows."""
    return tool_permissions.granted(version.permissions, allowed=limits.allowed_permissions)

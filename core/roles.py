"""Roles and the permissions they grant: the one table every interface checks against."""

from __future__ import annotations

from django.db import models


class Role(models.TextChoices):
    OWNER = "owner", "Owner"
    ADMIN = "admin", "Admin"
    MEMBER = "member", "Member"
    VIEWER = "viewer", "Viewer"


# Rank for "may act on": an admin manages members and viewers (and other admins' roles below
# owner); only an owner grants or removes ownership.
RANK = {Role.VIEWER: 0, Role.MEMBER: 1, Role.ADMIN: 2, Role.OWNER: 3}

READ = {"org:read", "members:read"}
READ |= {"agents:read", "config:read"}  # agents: definitions, instances, pool, config
READ |= {"tools:read"}  # custom tools: list, code, versions
WRITE = READ | set()  # members write what later features add (agents:write, tasks:publish ...)
WRITE |= {"agents:write"}  # create/edit/delete agents, request and stop instances
WRITE |= {"tasks:publish"}  # publish tasks and messages to the organization's agents (gateway)
WRITE |= {"tools:run"}  # run custom tools (API, portal's Test run, agents' runtimes)
MANAGE = WRITE | {"members:invite", "members:manage", "settings:write", "audit:read"}
API_KEYS_MANAGE = "api_keys:manage"
MANAGE |= {API_KEYS_MANAGE}  # create, list and revoke API keys (credentials)
MANAGE |= {"config:write"}  # the organization's config keys (agents.defaults ...)
MANAGE |= {"tools:write"}  # write custom tools: code, schema, limits, host API permissions

ROLE_PERMISSIONS: dict[str, frozenset[str]] = {
    Role.VIEWER: frozenset(READ),
    Role.MEMBER: frozenset(WRITE),
    Role.ADMIN: frozenset(MANAGE),
    Role.OWNER: frozenset(MANAGE | {"members:grant_owner"}),
}


# Powers an API key never carries, whatever its creator holds: a key must not mint keys or owners.
NON_DELEGABLE = frozenset({API_KEYS_MANAGE, "members:grant_owner"})


def delegable_scopes() -> frozenset[str]:
    """Every scope an API key can hold: every permission some role grants, less the ones a key
    may never carry."""
    return frozenset().union(*ROLE_PERMISSIONS.values()) - NON_DELEGABLE


def permissions_for(role: str) -> frozenset[str]:
    return ROLE_PERMISSIONS.get(role, frozenset())


def has_permission(role: str, permission: str) -> bool:
    return permission in permissions_for(role)

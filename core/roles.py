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
READ |= {"usage:read"}  # usage reports and meters (billing)
WRITE = READ | set()  # members write what later features add (agents:write, tasks:publish ...)
WRITE |= {"agents:write"}  # create/edit/delete agents, request and stop instances
WRITE |= {"tasks:publish"}  # publish tasks and messages to the organization's agents (gateway)
READ |= {"knowledge:read"}  # knowledge documents, their text included (vault)
WRITE |= {"knowledge:read", "knowledge:write", "secrets:read"}  # secrets: names, masked only
WRITE |= {"tools:run"}  # run custom tools (API, portal's Test run, agents' runtimes)
WRITE |= {"usage:report"}  # report usage events (CloudEvents) for the organization's runtimes
MANAGE = WRITE | {"members:invite", "members:manage", "settings:write", "audit:read"}
API_KEYS_MANAGE = "api_keys:manage"
MANAGE |= {API_KEYS_MANAGE}  # create, list and revoke API keys (credentials)
MANAGE |= {"config:write"}  # the organization's config keys (agents.defaults ...)
MANAGE |= {"secrets:write"}  # set, replace and delete secrets (never read them back)
# Receive the referenced secrets' values when attaching a runtime (gateway): put on a runtime's
# API key. Members, who define agents, cannot hold it, so they cannot read values through one.
MANAGE |= {"secrets:use"}
DATA_KEYS_ROTATE = "data_keys:rotate"  # the organization's data key (owner only, vault)
# Request the organization's deletion, and download its full export (owner only).
ORGANIZATION_DELETE = "organization:delete"
ORGANIZATION_EXPORT = "organization:export"
# Security settings that bind every member (two-factor authentication required: organizations).
ORGANIZATION_SECURITY = "organization:security"
# End a staff support session into the organization at once (organizations.support).
SUPPORT_END = "support:end"
OWNER_ONLY = {
    DATA_KEYS_ROTATE,
    ORGANIZATION_DELETE,
    ORGANIZATION_EXPORT,
    ORGANIZATION_SECURITY,
    SUPPORT_END,
}
MANAGE |= {"tools:write"}  # write custom tools: code, schema, limits, host API permissions
MANAGE |= {"usage:manage"}  # the organization's custom meters (billing)
# Spend budgets of API keys and agents (billing): never on a key, which could lift its own.
BUDGETS_MANAGE = "budgets:manage"
MANAGE |= {BUDGETS_MANAGE}

ROLE_PERMISSIONS: dict[str, frozenset[str]] = {
    Role.VIEWER: frozenset(READ),
    Role.MEMBER: frozenset(WRITE),
    Role.ADMIN: frozenset(MANAGE),
    # Invoices and the plan: the owner's (billing).
    Role.OWNER: frozenset(
        MANAGE | {"members:grant_owner", "billing:read", "billing:manage"} | OWNER_ONLY
    ),
}


# Powers an API key never carries, whatever its creator holds: a key must not mint keys or owners.
NON_DELEGABLE = frozenset(
    {API_KEYS_MANAGE, BUDGETS_MANAGE, "members:grant_owner", "billing:manage", *OWNER_ONLY}
)


def delegable_scopes() -> frozenset[str]:
    """Every scope an API key can hold: every permission some role grants, less the ones a key
    may never carry."""
    return frozenset().union(*ROLE_PERMISSIONS.values()) - NON_DELEGABLE


def permissions_for(role: str) -> frozenset[str]:
    return ROLE_PERMISSIONS.get(role, frozenset())


def has_permission(role: str, permission: str) -> bool:
    return permission in permissions_for(role)

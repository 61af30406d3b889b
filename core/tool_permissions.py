"""What a custom tool may ask its host API for: the catalogue, and the check against a plan.

A plan lists the permissions its organizations' tools may be granted
(`Plan.allowed_tool_permissions`, edited by staff in admin); a tool asking for one outside the
catalogue or the plan is refused on save, and a tool saved before a downgrade is granted only
what the current plan allows (`granted`).

Secrets: a tool may be granted `secrets:<NAME>`, one per secret of the organization (vault), which
hands it `api.secret(name)` for those names only. A plan allows the family as a whole
(`secrets:*`): secret names are the organization's, not the plan's.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from django.core.exceptions import ValidationError

from core.errors import field_error

# Permission -> (the host API functions it unlocks, what it lets a tool do).
CATALOGUE: dict[str, tuple[tuple[str, ...], str]] = {
    "config:read": (("config.read",), "Read the organization's configuration keys"),
    "kv:read": (("kv.read",), "Read the organization's tool key-value store"),
    "kv:write": (("kv.write", "kv.delete"), "Write the organization's tool key-value store"),
    "publish": (("publish",), "Publish events to the organization's subjects (tools.*)"),
}
# The vault's secret names (vault.models uses this pattern too).
SECRET_NAME_PATTERN = r"^[A-Z][A-Z0-9_]{0,63}$"
SECRET_PREFIX = "secrets:"
# What a plan lists to let its organizations' tools be granted secrets by name.
SECRETS_FAMILY = "secrets:*"
SECRETS_TEXT = "Read the organization's secrets a tool is granted by name (secrets:NAME)"
SECRET_FUNCTION = "secret"
SECRET_PERMISSION_PATTERN = "^secrets:" + SECRET_NAME_PATTERN.removeprefix("^")
_SECRET_PERMISSION = re.compile(SECRET_PERMISSION_PATTERN)
MAX_SECRETS_PER_TOOL = 20
# Every name a plan may list.
PLAN_CATALOGUE = [*CATALOGUE, SECRETS_FAMILY]
# Every name a tool may be granted (the API's pattern).
TOOL_PERMISSION_PATTERN = (
    "^(?:"
    + "|".join(re.escape(name) for name in CATALOGUE)
    + ")$|"
    + SECRET_PERMISSION_PATTERN.removesuffix("$")
    + "$"
)
MAX_TOOL_PERMISSIONS = len(CATALOGUE) + MAX_SECRETS_PER_TOOL


def default_allowed() -> list[str]:
    return list(PLAN_CATALOGUE)


def secret_name(permission: str) -> str | None:
    """`NAME` for the permission `secrets:NAME`, else None."""
    match = _SECRET_PERMISSION.fullmatch(permission)
    return permission.removeprefix(SECRET_PREFIX) if match else None


def secret_names(permissions: Iterable[str]) -> list[str]:
    return [name for name in map(secret_name, permissions) if name is not None]


def secret_permission(name: str) -> str:
    return SECRET_PREFIX + name


def functions_for(permissions: Iterable[str]) -> list[str]:
    """The host API functions a tool with these permissions is handed."""
    permissions = list(permissions)
    functions = [fn for name in permissions if name in CATALOGUE for fn in CATALOGUE[name][0]]
    if secret_names(permissions):
        functions.append(SECRET_FUNCTION)
    return functions


def _family(name: str) -> str:
    """The name a plan lists to allow `name`."""
    return SECRETS_FAMILY if secret_name(name) is not None else name


def validate_permissions(value: Any, *, allowed: Iterable[str]) -> list[str]:
    """The requested permissions, if all are known and allowed by the plan (in catalogue order)."""
    if value is None:
        return []
    if not isinstance(value, list | tuple) or not all(isinstance(item, str) for item in value):
        raise field_error("permissions", "Must be a list of permission names.", "invalid")
    unknown = sorted({name for name in value if name not in CATALOGUE and not secret_name(name)})
    if unknown:
        raise field_error(
            "permissions", f"Unknown permissions: {', '.join(unknown)}.", "unknown_permissions"
        )
    secrets = sorted(set(secret_names(value)))
    if len(secrets) > MAX_SECRETS_PER_TOOL:
        raise field_error(
            "permissions", f"At most {MAX_SECRETS_PER_TOOL} secrets per tool.", "too_many_secrets"
        )
    allowed_set = frozenset(allowed)
    refused = sorted({name for name in value if _family(name) not in allowed_set})
    if refused:
        raise field_error(
            "permissions",
            f"Not allowed by your plan: {', '.join(refused)}.",
            "permissions_not_allowed",
        )
    return [name for name in CATALOGUE if name in value] + [
        secret_permission(name) for name in secrets
    ]


def validate_plan_permissions(value: Any) -> None:
    """A plan's `allowed_tool_permissions`: names from the catalogue (a model validator)."""
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ValidationError("Give a list of tool permission names.")
    unknown = [name for name in value if name not in PLAN_CATALOGUE]
    if unknown:
        raise ValidationError(
            f"Unknown tool permissions: {', '.join(unknown)}. Known: {', '.join(PLAN_CATALOGUE)}."
        )


def granted(requested: Iterable[str], *, allowed: Iterable[str]) -> list[str]:
    allowed_set = frozenset(allowed)
    return [name for name in requested if _family(name) in allowed_set]

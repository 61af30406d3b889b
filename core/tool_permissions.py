"""What a custom tool may ask its host API for: the catalogue, and the check against a plan.

A plan lists the permissions its organizations' tools may be granted
(`Plan.allowed_tool_permissions`, edited by staff in admin); a tool asking for one outside the
catalogue or the plan is refused on save, and a tool saved before a downgrade is granted only
what the current plan allows (`granted`). `secrets:<name>` joins the catalogue once secrets exist.
"""

from __future__ import annotations

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
# The catalogue's names as choices (the API's enum; portal.settings names it for the schema).
NAMES = list(CATALOGUE)


def default_allowed() -> list[str]:
    return list(CATALOGUE)


def functions_for(permissions: Iterable[str]) -> list[str]:
    """The host API functions a tool with these permissions is handed."""
    return [fn for name in permissions if name in CATALOGUE for fn in CATALOGUE[name][0]]


def validate_permissions(value: Any, *, allowed: Iterable[str]) -> list[str]:
    """The requested permissions, if all are known and allowed by the plan (in catalogue order)."""
    if value is None:
        return []
    if not isinstance(value, list | tuple) or not all(isinstance(item, str) for item in value):
        raise field_error("permissions", "Must be a list of permission names.", "invalid")
    unknown = sorted({name for name in value if name not in CATALOGUE})
    if unknown:
        raise field_error(
            "permissions", f"Unknown permissions: {', '.join(unknown)}.", "unknown_permissions"
        )
    allowed_set = frozenset(allowed)
    refused = sorted({name for name in value if name not in allowed_set})
    if refused:
        raise field_error(
            "permissions",
            f"Not allowed by your plan: {', '.join(refused)}.",
            "permissions_not_allowed",
        )
    return [name for name in CATALOGUE if name in value]


def validate_plan_permissions(value: Any) -> None:
    """A plan's `allowed_tool_permissions`: names from the catalogue (a model validator)."""
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ValidationError("Give a list of tool permission names.")
    unknown = [name for name in value if name not in CATALOGUE]
    if unknown:
        raise ValidationError(
            f"Unknown tool permissions: {', '.join(unknown)}. Known: {', '.join(CATALOGUE)}."
        )


def granted(requested: Iterable[str], *, allowed: Iterable[str]) -> list[str]:
    allowed_set = frozenset(allowed)
    return [name for name in requested if name in allowed_set]

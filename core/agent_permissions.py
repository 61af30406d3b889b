"""What an agent may ask to do: the catalogue of agent permissions and the check against a plan.

Which of them an organization may grant comes from its plan (`Plan.allowed_agent_permissions`,
edited by staff in admin). A definition asking for one outside the catalogue or outside the plan
is refused, naming them; a definition saved before a downgrade keeps what it asked for, but is
granted only what the current plan allows (`granted`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from django.core.exceptions import ValidationError

from core.errors import field_error

CATALOGUE: dict[str, str] = {
    "messages:read": "Receive messages in its organization's namespace",
    "messages:publish": "Publish messages to its organization's namespace",
    "tasks:receive": "Receive tasks published to the organization's agents",
    "tasks:publish": "Publish tasks to other agents",
    "config:read": "Read the organization's configuration",
    "tools:invoke": "Run the organization's custom tools",
    "http:outbound": "Make outbound HTTP requests",
    "agents:spawn": "Request instances of other agents",
}

# The catalogue's names as choices (the API's enum; portal.settings names it for the schema).
NAMES = sorted(CATALOGUE)
MAX_TOOLS = 50
TOOL_RE = re.compile(r"^[a-z][a-z0-9_.-]{0,63}$")
# An agent's tool entry: a tool's name, pinned to one of its versions with `@<n>` if wanted.
TOOL_ENTRY_RE = re.compile(r"^(?P<name>[a-z][a-z0-9_.-]{0,63})(@(?P<version>[1-9][0-9]{0,8}))?$")


def _string_list(value: Any, field_name: str, *, limit: int) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list | tuple) or not all(isinstance(item, str) for item in value):
        raise field_error(field_name, "Must be a list of names.", "invalid")
    if len(value) > limit:
        raise field_error(field_name, f"At most {limit}.", "too_many")
    # Keep the caller's order, drop repeats.
    return list(dict.fromkeys(item.strip() for item in value if item.strip()))


def validate_permissions(value: Any, *, allowed: Iterable[str]) -> list[str]:
    """The requested permissions, if all are known and allowed by the plan."""
    requested = _string_list(value, "permissions", limit=len(CATALOGUE))
    unknown = [name for name in requested if name not in CATALOGUE]
    if unknown:
        raise field_error(
            "permissions", f"Unknown permissions: {', '.join(unknown)}.", "unknown_permissions"
        )
    allowed_set = frozenset(allowed)
    refused = [name for name in requested if name not in allowed_set]
    if refused:
        raise field_error(
            "permissions",
            f"Not allowed by your plan: {', '.join(refused)}.",
            "permissions_not_allowed",
        )
    return requested


def validate_plan_permissions(value: Any) -> None:
    """A plan's `allowed_agent_permissions`: names from the catalogue (a model validator)."""
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ValidationError("Give a list of agent permission names.")
    unknown = [name for name in value if name not in CATALOGUE]
    if unknown:
        raise ValidationError(
            f"Unknown agent permissions: {', '.join(unknown)}. Known: {', '.join(CATALOGUE)}."
        )


def granted(requested: Iterable[str], *, allowed: Iterable[str]) -> list[str]:
    """What a definition actually gets: what it asked for, filtered by what the plan allows."""
    allowed_set = frozenset(allowed)
    return [name for name in requested if name in allowed_set]


def tool_entries(tools: Iterable[str]) -> dict[str, int | None]:
    """An agent's tools: name -> pinned version (None: the tool's current version)."""
    entries: dict[str, int | None] = {}
    for entry in tools:
        match = TOOL_ENTRY_RE.fullmatch(entry)
        if match is not None:
            version = match.group("version")
            entries[match.group("name")] = int(version) if version else None
    return entries


def validate_tools(value: Any) -> list[str]:
    tools = _string_list(value, "tools", limit=MAX_TOOLS)
    invalid = [name for name in tools if not TOOL_ENTRY_RE.fullmatch(name)]
    if invalid:
        raise field_error(
            "tools",
            f"Invalid tool names: {', '.join(invalid)} (lowercase letters, digits, _, . and -, "
            "starting with a letter, at most 64 characters; `@<version>` pins a version).",
            "invalid_tools",
        )
    return tools

"""Config keys and values: the key pattern, value limits, and layered resolution with provenance.

Pure functions (no database, no cache): the rules documented in docs/agents.md live here once.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from core import strictjson
from core.errors import field_error

# A key is 1 to 8 dot-separated segments; a segment starts with a lowercase letter and continues
# with lowercase letters, digits, `_` or `-` (at most 40 characters). Examples: `agents.defaults`,
# `agents.worker`, `billing.alerts.email`.
SEGMENT = r"[a-z][a-z0-9_-]{0,39}"
KEY_PATTERN = rf"^{SEGMENT}(\.{SEGMENT}){{0,7}}$"
KEY_RE = re.compile(KEY_PATTERN)
# Keys name audit events' resources (128 characters).
MAX_KEY_LENGTH = 128
# An agent type is one key segment, so that `agents.<type>` is a valid key.
AGENT_TYPE_PATTERN = rf"^{SEGMENT}$"
AGENT_TYPE_RE = re.compile(AGENT_TYPE_PATTERN)
BUILT_IN_AGENT_TYPES = ("worker", "assistant", "router")
AGENTS_NAMESPACE = "agents"
DEFAULTS_KEY = "agents.defaults"
RESERVED_AGENT_TYPES = frozenset({"defaults"})

MAX_VALUE_BYTES = 64 * 1024
MAX_DEPTH = 32

SOURCE_PLATFORM = "platform"
SOURCE_ORGANIZATION = "organization"
SOURCE_DEFINITION = "definition"


def encoded_size(value: Any) -> int:
    """Bytes of the compact UTF-8 JSON encoding: what the 64 KB limit measures."""
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())


def depth(value: Any) -> int:
    """Nesting depth (a scalar is 0), iteratively: a hostile value cannot exhaust the stack."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            deepest = max(deepest, level)
            continue
        deepest = max(deepest, level + 1)
        stack.extend((child, level + 1) for child in children)
    return deepest


def contains_nul(value: Any) -> bool:
    """Whether a string anywhere in the value (keys included) holds U+0000, which PostgreSQL's
    jsonb cannot store."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def validate_key(key: Any) -> str:
    """The key if it follows the pattern; ValidationError on `key` otherwise."""
    if not isinstance(key, str) or not key:
        raise field_error("key", "Enter a key.", "required")
    if len(key) > MAX_KEY_LENGTH or not KEY_RE.fullmatch(key):
        raise field_error(
            "key",
            "Keys are 1 to 8 dot-separated segments of lowercase letters, digits, _ and -, "
            "each starting with a letter, 128 characters at most (for example agents.worker).",
            "invalid_key",
        )
    segments = key.split(".")
    if segments[0] == AGENTS_NAMESPACE and len(segments) != 2:
        raise field_error(
            "key", "Agent config keys are agents.defaults or agents.<type>.", "invalid_key"
        )
    return key


def validate_value(value: Any, *, field_name: str = "value", require_object: bool = False) -> Any:
    """Check a JSON value against the size and depth limits (and, if asked, that it's an object)."""
    if require_object and not isinstance(value, dict):
        raise field_error(field_name, "Must be a JSON object.", "not_an_object")
    if depth(value) > MAX_DEPTH:
        raise field_error(field_name, f"Nested deeper than {MAX_DEPTH} levels.", "too_deep")
    try:
        strictjson.check(value, max_depth=MAX_DEPTH)
    except strictjson.InvalidJson as error:
        raise field_error(field_name, error.message, error.code) from error
    if contains_nul(value):
        raise field_error(field_name, "Text may not contain the NUL character.", "null_character")
    try:
        size = encoded_size(value)
    except (TypeError, ValueError) as error:
        raise field_error(field_name, "Not a JSON value.", "invalid_json") from error
    if size > MAX_VALUE_BYTES:
        raise field_error(
            field_name, f"{size} bytes; the limit is {MAX_VALUE_BYTES} bytes (64 KB).", "too_large"
        )
    return value


def validate_entry(key: Any, value: Any) -> tuple[str, Any]:
    """A key and its value together: `agents.*` values are objects (they are merged)."""
    key = validate_key(key)
    if value is None:  # a version whose value is null marks a deletion (ConfigVersion)
        raise field_error("value", "A JSON value: delete the key to remove it.", "null")
    return key, validate_value(value, require_object=key.startswith(f"{AGENTS_NAMESPACE}."))


def validate_agent_type(agent_type: Any) -> str:
    if not isinstance(agent_type, str) or not AGENT_TYPE_RE.fullmatch(agent_type):
        raise field_error(
            "type",
            "A type starts with a lowercase letter and has at most 40 lowercase letters, "
            "digits, _ or - (for example worker or billing-bot).",
            "invalid_type",
        )
    if agent_type in RESERVED_AGENT_TYPES:
        raise field_error("type", f"“{agent_type}” is reserved.", "reserved_type")
    return agent_type


def type_key(agent_type: str) -> str:
    return f"{AGENTS_NAMESPACE}.{agent_type}"


def parse_json_text(text: str, *, field_name: str = "value") -> Any:
    """Parse JSON typed into a form (the strict decoder); a ValidationError says what is wrong."""
    try:
        return strictjson.loads(text, max_depth=MAX_DEPTH)
    except strictjson.InvalidJson as error:
        raise field_error(field_name, error.message, error.code) from error


# --- Merge and resolution --------------------------------------------------------------------


def deep_merge(base: Any, override: Any) -> Any:
    """Objects merge key by key, recursively; anything else (lists, scalars, null) replaces."""
    if isinstance(base, dict) and isinstance(override, dict):
        merged = dict(base)
        for key, value in override.items():
            merged[key] = deep_merge(base[key], value) if key in base else value
        return merged
    return override


@dataclass(frozen=True)
class Layer:
    """One source of configuration: where it came from (`source`, `name`) and its object."""

    source: str
    name: str
    value: dict[str, Any]

    @property
    def label(self) -> str:
        return f"{self.source}:{self.name}" if self.name else self.source


@dataclass(frozen=True)
class ResolvedValue:
    pointer: str
    value: Any
    layer: Layer


@dataclass(frozen=True)
class Resolution:
    """The merged configuration and, for every leaf (JSON Pointer), the layer it came from."""

    value: dict[str, Any]
    provenance: list[ResolvedValue] = field(default_factory=list)
    layers: list[Layer] = field(default_factory=list)


def _escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


def _leaves(value: Any, pointer: str = "") -> list[tuple[str, Any]]:
    """(JSON Pointer, value) of every leaf: non-objects, and empty objects."""
    if isinstance(value, dict) and value:
        found: list[tuple[str, Any]] = []
        for key, item in value.items():
            found.extend(_leaves(item, f"{pointer}/{_escape(str(key))}"))
        return found
    return [(pointer, value)]


def _defines(value: Any, tokens: list[str]) -> bool:
    for token in tokens:
        if not isinstance(value, dict) or token not in value:
            return False
        value = value[token]
    return True


def _tokens(pointer: str) -> list[str]:
    return [t.replace("~1", "/").replace("~0", "~") for t in pointer.split("/")[1:]]


def resolve(layers: list[Layer]) -> Resolution:
    """Merge `layers` in order (later wins) and attribute each leaf to the last layer defining it.

    The last layer that defines a leaf's path is its source: any later layer defining the path
    would have merged into or replaced the value there.
    """
    merged: dict[str, Any] = {}
    for layer in layers:
        merged = deep_merge(merged, layer.value)
    provenance = []
    for pointer, value in _leaves(merged):
        if pointer == "":
            continue  # nothing configured at all
        tokens = _tokens(pointer)
        source = next(layer for layer in reversed(layers) if _defines(layer.value, tokens))
        provenance.append(ResolvedValue(pointer=pointer, value=value, layer=source))
    return Resolution(value=merged, provenance=provenance, layers=list(layers))


def agent_layers(
    *,
    agent_type: str,
    platform: dict[str, Any],
    organization: dict[str, Any],
    definition: dict[str, Any] | None,
) -> list[Layer]:
    """The layers of an agent's configuration, lowest first.

    platform `agents.defaults` < platform `agents.<type>` < organization `agents.defaults` <
    organization `agents.<type>` < the definition's own config. `platform` and `organization`
    map keys to values; a missing key (or a non-object value) contributes nothing.
    """
    layers = []
    for source, values in ((SOURCE_PLATFORM, platform), (SOURCE_ORGANIZATION, organization)):
        for key in (DEFAULTS_KEY, type_key(agent_type)):
            value = values.get(key)
            if isinstance(value, dict):
                layers.append(Layer(source=source, name=key, value=value))
    if definition is not None:
        layers.append(Layer(source=SOURCE_DEFINITION, name="", value=definition))
    return layers

"""Path converters whose rule the OpenAPI document states (core.api.ApiSchema reads `schema`).

A converter made by `documented` matches any one path segment, so that the view's own check
answers a value that breaks the rule with a 400 naming it (not a bare 404); the document gives the
rule as the parameter's `pattern` and `maxLength`, so that clients and schemathesis know it.
"""

from __future__ import annotations

from typing import Any

from django.urls import register_converter


class DocumentedConverter:
    regex = "[^/]+"
    schema: dict[str, Any] = {}

    def to_python(self, value: str) -> str:
        return value

    def to_url(self, value: str) -> str:
        return value


def string_schema(
    pattern: str, *, max_length: int | None = None, reserved: tuple[str, ...] = ()
) -> dict[str, Any]:
    """A string that full-matches `pattern` (anchored, as ECMA regexes are read), at most
    `max_length` characters, none of `reserved`."""
    schema: dict[str, Any] = {"type": "string", "pattern": pattern}
    if max_length is not None:
        schema["maxLength"] = max_length
    if reserved:
        schema["not"] = {"enum": list(reserved)}
    return schema


def documented(
    name: str, *, pattern: str, max_length: int | None = None, reserved: tuple[str, ...] = ()
) -> None:
    """Register the path converter `name` (`<name:variable>` in a URL pattern) for segments of
    `string_schema(pattern, max_length=, reserved=)`."""
    schema = string_schema(pattern, max_length=max_length, reserved=reserved)
    converter = type(f"{name.title().replace('_', '')}Converter", (DocumentedConverter,), {})
    converter.schema = schema
    register_converter(converter, name)

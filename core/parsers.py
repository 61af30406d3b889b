"""The API's one body parser: DRF's JSON parser on top of the strict decoder (core.strictjson).

It is the default parser (settings REST_FRAMEWORK), so every API view, those added later
included, refuses deep nesting, non-finite numbers, lone surrogates and non-UTF-8 bodies with a
400 `parse_error` in the project's error shape, instead of a 500 and a traceback.
"""

from __future__ import annotations

from typing import Any

from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

from core import strictjson


class StrictJSONParser(JSONParser):
    """`application/json` (and `+json` types) through `core.strictjson.loads`."""

    def parse(self, stream: Any, media_type: Any = None, parser_context: Any = None) -> Any:
        if stream is None:
            return None
        try:
            return strictjson.loads(stream.read())
        except strictjson.InvalidJson as error:
            raise ParseError(f"Bad JSON: {error.message}", code="parse_error") from error

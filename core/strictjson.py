"""The one strict JSON decoder: every way JSON enters (HTTP bodies, WebSocket frames, query values,
tasks, config, usage events) goes through `loads` or, for values already decoded, `check`.

What it refuses, with `InvalidJson` (a 400 over HTTP, an error frame on a socket):
- text that is not UTF-8, or not JSON;
- nesting deeper than `max_depth` (the decoder's own recursion is caught too: a hostile body of
  a million `[` gives a clear 400, never a `RecursionError` traceback);
- non-finite numbers: `NaN`, `Infinity`, `-Infinity` and numbers that overflow to infinity
  (`1e999999`), which strict parsers (a browser's `JSON.parse`) cannot read back;
- lone UTF-16 surrogates (`"\\ud800"`), in keys and values, which cannot be encoded as UTF-8;
- integers longer than Python's conversion limit.
"""

from __future__ import annotations

import json
import math
from typing import Any

# Whole documents (an HTTP body, a frame): the envelope around a value limited below.
MAX_DEPTH = 64
# Values stored or relayed (config values, tasks, published data).
MAX_VALUE_DEPTH = 32


class InvalidJson(ValueError):
    """Refused JSON. `code` is stable (`invalid_json`, `too_deep`, `non_finite_number`,
    `invalid_unicode`); `message` is for people."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _refuse_constant(name: str) -> Any:
    raise InvalidJson("non_finite_number", f"{name} is not a JSON number: send a finite number.")


def _parse_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise InvalidJson("non_finite_number", "A number is too large: send a finite number.")
    return value


def _parse_int(text: str) -> int:
    try:
        return int(text)
    except ValueError as error:  # more digits than int() converts (sys.set_int_max_str_digits)
        raise InvalidJson("invalid_json", "A number has too many digits.") from error


def _has_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def check(value: Any, *, max_depth: int = MAX_VALUE_DEPTH) -> Any:
    """`value` (already decoded) if it is strict JSON within `max_depth`; else InvalidJson.

    Iterative: a hostile value cannot exhaust the stack. A scalar has depth 0, `[]` depth 1.
    """
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            if level + 1 > max_depth:
                raise InvalidJson("too_deep", f"Nested deeper than {max_depth} levels.")
            for key, child in item.items():
                if not isinstance(key, str):
                    raise InvalidJson("invalid_json", "Object keys are strings.")
                if _has_surrogate(key):
                    raise InvalidJson("invalid_unicode", "Text holds a lone UTF-16 surrogate.")
                stack.append((child, level + 1))
        elif isinstance(item, list | tuple):
            if level + 1 > max_depth:
                raise InvalidJson("too_deep", f"Nested deeper than {max_depth} levels.")
            stack.extend((child, level + 1) for child in item)
        elif isinstance(item, str):
            if _has_surrogate(item):
                raise InvalidJson("invalid_unicode", "Text holds a lone UTF-16 surrogate.")
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise InvalidJson("non_finite_number", "Numbers must be finite.")
        elif item is None or isinstance(item, bool | int):
            continue
        else:
            raise InvalidJson("invalid_json", f"{type(item).__name__} is not a JSON value.")
    return value


def loads(data: str | bytes | bytearray, *, max_depth: int = MAX_DEPTH) -> Any:
    """Decode strict JSON (UTF-8 when given bytes); InvalidJson says why it was refused."""
    if isinstance(data, bytes | bytearray):
        try:
            text = bytes(data).decode("utf-8")
        except UnicodeDecodeError as error:
            raise InvalidJson("invalid_unicode", "The body is not UTF-8.") from error
    else:
        text = data
    try:
        value = json.loads(
            text,
            parse_constant=_refuse_constant,
            parse_float=_parse_float,
            parse_int=_parse_int,
        )
    except InvalidJson:
        raise
    except RecursionError as error:
        raise InvalidJson("too_deep", f"Nested deeper than {max_depth} levels.") from error
    except json.JSONDecodeError as error:
        raise InvalidJson(
            "invalid_json",
            f"Not valid JSON: {error.msg} (line {error.lineno}, column {error.colno}).",
        ) from error
    except ValueError as error:
        raise InvalidJson("invalid_json", "Not valid JSON.") from error
    return check(value, max_depth=max_depth)


def dumps(value: Any) -> str:
    """Compact JSON that strict parsers read back (refuses what `loads` refuses)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def encoded_size(value: Any) -> int:
    """Bytes of the compact UTF-8 encoding; InvalidJson for what cannot be encoded."""
    try:
        return len(dumps(value).encode("utf-8"))
    except UnicodeEncodeError as error:
        raise InvalidJson("invalid_unicode", "Text holds a lone UTF-16 surrogate.") from error
    except (TypeError, ValueError) as error:
        raise InvalidJson("invalid_json", "Not a JSON value.") from error
    except RecursionError as error:
        raise InvalidJson("too_deep", "Nested too deeply.") from error

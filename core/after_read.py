"""Checks whose verdict arrives after a read-only API handler has run.

Billing's throttle sends its Redis round trip before a GET's view and reads the reply after it,
so that the round trip overlaps the view's own database reads. A throttle of a GET or HEAD
whose handler settles (`settles_after_read`: core.api.ApiView wraps every `get`) registers the
check with `defer`; the handler runs every check once it returns or raises, and an error a check
raises answers the request instead: the handler's response or error is dropped, a refusal
outranks what the view found.

Apart from core.api because DRF imports the throttles that use it while it builds its own
views, before core.api (a DRF view module) can be imported.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def settles_after_read(view: Any, request: Any) -> bool:
    """Whether `view`'s handler for `request` runs the checks `defer` registers."""
    handler = getattr(type(view), "get", None)
    return request.method in ("GET", "HEAD") and getattr(handler, "_api_read", False)


def defer(request: Any, check: Callable[[], None]) -> None:
    """Run `check()` when the handler of this GET or HEAD returns (see settles_after_read)."""
    request._request.__dict__.setdefault("_after_read", []).append(check)


def settle(request: Any) -> None:
    """Run the checks registered for `request`; the first error any raises is raised."""
    checks = request._request.__dict__.pop("_after_read", ())
    error: Exception | None = None
    for check in checks:
        try:
            check()
        except Exception as raised:  # every check runs; the first error answers
            error = error or raised
    if error is not None:
        raise error

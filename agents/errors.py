"""Errors the agents services raise: field errors with codes, and quota refusals (409)."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError


def field_error(field: str, message: str, code: str) -> ValidationError:
    """A ValidationError on one field that keeps its code (a plain dict would drop it)."""
    return ValidationError({field: [ValidationError(message, code=code)]})


class QuotaExceeded(Exception):
    """A limit of the organization's pool would be exceeded: a 409 naming the limit.

    `code` is one of `agent_limit_reached`, `instance_limit_reached`, `insufficient_cpu`,
    `insufficient_memory`, `instance_too_large`; `limit` names the limit that was hit.
    """

    def __init__(self, code: str, message: str, *, limit: str, **detail: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.limit = limit
        self.detail = {"limit": limit, **detail}

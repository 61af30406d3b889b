"""JSON log lines (structlog's formatter over the standard library's logging): one object per
line with the time, level, logger, message, the request id and the organization; never a secret
(fields named like one are masked)."""

from __future__ import annotations

import re
from typing import Any

import structlog

SECRET_FIELD = re.compile(r"pass(word)?|secret|token|authorization|api_key|cookie", re.I)


def _organization(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
    record = event.get("_record")
    organization = getattr(record, "organization", None)
    if organization:
        event["organization"] = organization
    return event


def _mask_secrets(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
    for name in list(event):
        if name not in {"event", "_record", "_from_structlog"} and SECRET_FIELD.search(name):
            event[name] = "[redacted]"
    return event


def json_formatter() -> dict[str, Any]:
    """The `formatters` entry of Django's LOGGING for JSON lines."""
    return {
        "()": structlog.stdlib.ProcessorFormatter,
        "foreign_pre_chain": [
            structlog.contextvars.merge_contextvars,
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_logger_name,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _organization,
            _mask_secrets,
        ],
        "processors": [
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
    }

"""Export formats (JSON, CSV, CEF) and the constant-memory stream that produces them.

Events are read in keyset chunks (`sequence > last ORDER BY sequence LIMIT n`), oldest first, up to
the sequence the export was requested at: memory stays constant however long the log, no
transaction or server-side cursor stays open between chunks (so it also works behind a
transaction-pooling proxy), and the export is a consistent prefix of an append-only log.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from importlib import metadata
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction

from audit import sealing
from audit.chain import hashed_fields
from audit.models import AuditEvent, Result
from audit.selectors import EventFilters, require_audit_read
from audit.services import record
from core import errors
from core.actors import Actor
from tenants import ratelimit

CHUNK_SIZE = 2000
FIELDS = [
    "tenant_id",
    "sequence",
    "occurred_at",
    "actor_kind",
    "actor_id",
    "actor_label",
    "action",
    "resource_type",
    "resource_id",
    "result",
    "ip",
    "user_agent",
    "details",
    "previous_hash",
    "hash",
]


def event_record(event: AuditEvent) -> dict[str, Any]:
    """An event as plain data: the fields its hash covers, under the same names, and the hash."""
    return {**hashed_fields(event), "hash": event.hash}


def iter_events(
    filters: EventFilters, *, through_sequence: int, chunk_size: int = CHUNK_SIZE
) -> Iterator[list[AuditEvent]]:
    """Chunks of matching events, oldest first, with sequence <= `through_sequence`."""
    queryset = filters.apply(AuditEvent.objects.filter(sequence__lte=through_sequence))
    after = 0
    while True:
        batch = list(queryset.filter(sequence__gt=after).order_by("sequence")[:chunk_size])
        if not batch:
            return
        yield batch
        after = batch[-1].sequence


# --- JSON: one array, one event per line ---------------------------------------------------------
# A valid JSON document (json.load reads it), and still line-oriented: every line between the
# brackets is one event followed by a comma, except the last.


def _json_line(event: AuditEvent) -> str:
    return json.dumps(event_record(event), ensure_ascii=False, separators=(",", ":"))


def json_chunks(batches: Iterator[list[AuditEvent]]) -> Iterator[str]:
    yield "["
    first = True
    for batch in batches:
        lines = [_json_line(event) for event in batch]
        yield ("\n" if first else ",\n") + ",\n".join(lines)
        first = False
    yield "\n]\n"


# --- CSV -----------------------------------------------------------------------------------------
# Cells that a spreadsheet would run as a formula (starting with = + - @ tab or CR) get a leading
# apostrophe, as do cells that already start with one, so that `csv_unescape` restores every value
# exactly. Details are a JSON object in one cell.

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "'")


def csv_escape(value: str) -> str:
    return "'" + value if value.startswith(FORMULA_STARTS) else value


def csv_unescape(value: str) -> str:
    return value[1:] if value.startswith("'") else value


def _csv_cells(event: AuditEvent) -> list[str]:
    record = event_record(event)
    record["details"] = json.dumps(record["details"], ensure_ascii=False, sort_keys=True)
    return [csv_escape("" if record[name] is None else str(record[name])) for name in FIELDS]


def csv_chunks(batches: Iterator[list[AuditEvent]]) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(FIELDS)
    yield buffer.getvalue()
    for batch in batches:
        buffer.seek(0)
        buffer.truncate()
        writer.writerows(_csv_cells(event) for event in batch)
        yield buffer.getvalue()


# --- CEF (ArcSight Common Event Format, version 0) -----------------------------------------------
# CEF:Version|Device Vendor|Device Product|Device Version|Signature ID|Name|Severity|Extension
# Header fields escape `\` and `|` with a backslash and may not span lines. Extension values escape
# `\` and `=` with a backslash and encode line breaks as the two characters \n (\r); `|` needs no
# escaping there. One event per line.

CEF_VENDOR = "AgentPlane"
CEF_PRODUCT = "AgentPlane"
CEF_SEVERITY = {Result.SUCCESS: 3, Result.FAILED: 5, Result.DENIED: 7}


@cache
def product_version() -> str:
    try:
        return metadata.version("agentplane")
    except metadata.PackageNotFoundError:
        return "0"


def cef_header_escape(value: str) -> str:
    value = value.replace("\\", "\\\\").replace("|", "\\|")
    return value.replace("\r\n", " ").replace("\n", " ").replace("\r", " ")


def cef_extension_escape(value: str) -> str:
    value = value.replace("\\", "\\\\").replace("=", "\\=")
    return value.replace("\r\n", "\\n").replace("\n", "\\n").replace("\r", "\\r")


def cef_name(event: AuditEvent) -> str:
    name = event.action.replace(".", " ").replace("_", " ").capitalize()
    return name if event.result == Result.SUCCESS else f"{name} ({event.result})"


def cef_line(event: AuditEvent) -> str:
    header = [
        "CEF:0",
        cef_header_escape(CEF_VENDOR),
        cef_header_escape(CEF_PRODUCT),
        cef_header_escape(product_version()),
        cef_header_escape(event.action),
        cef_header_escape(cef_name(event)),
        str(CEF_SEVERITY.get(event.result, 5)),
    ]
    extension: list[tuple[str, str]] = [
        ("rt", str(int(event.occurred_at.timestamp() * 1000))),
        ("externalId", str(event.sequence)),
        ("act", event.action),
        ("outcome", event.result),
        ("suser", event.actor_label),
        ("suid", event.actor_id),
        ("cs1Label", "tenantId"),
        ("cs1", event.tenant_id),
        ("cs2Label", "actorKind"),
        ("cs2", event.actor_kind),
        ("cs3Label", "resourceType"),
        ("cs3", event.resource_type),
        ("cs4Label", "resourceId"),
        ("cs4", event.resource_id),
        ("cs5Label", "details"),
        ("cs5", json.dumps(event.details, ensure_ascii=False, sort_keys=True)),
        ("cs6Label", "hash"),
        ("cs6", event.hash),
        ("flexString1Label", "previousHash"),
        ("flexString1", event.previous_hash),
    ]
    if event.ip:
        if ":" in event.ip:
            extension += [("c6a2Label", "sourceIPv6Address"), ("c6a2", event.ip)]
        else:
            extension.append(("src", event.ip))
    if event.user_agent:
        extension.append(("requestClientApplication", event.user_agent))
    pairs = " ".join(f"{key}={cef_extension_escape(value)}" for key, value in extension if value)
    return "|".join(header) + "|" + pairs


def cef_chunks(batches: Iterator[list[AuditEvent]]) -> Iterator[str]:
    for batch in batches:
        yield "".join(cef_line(event) + "\n" for event in batch)


FORMATS: dict[str, tuple[Callable[[Iterator[list[AuditEvent]]], Iterator[str]], str, str]] = {
    "json": (json_chunks, "application/json; charset=utf-8", "json"),
    "csv": (csv_chunks, "text/csv; charset=utf-8", "csv"),
    "cef": (cef_chunks, "text/plain; charset=utf-8", "cef"),
}


def render(
    format: str, filters: EventFilters, *, through_sequence: int, chunk_size: int = CHUNK_SIZE
) -> Iterator[str]:
    """The export's text, chunk by chunk (one chunk per batch of events)."""
    formatter = FORMATS[format][0]
    return formatter(iter_events(filters, through_sequence=through_sequence, chunk_size=chunk_size))


@dataclass(frozen=True)
class Export:
    """A recorded export request: `chunks()` produces its text lazily, chunk by chunk."""

    format: str
    filters: EventFilters
    through_sequence: int
    filename: str

    @property
    def content_type(self) -> str:
        return FORMATS[self.format][1]

    def chunks(self, chunk_size: int = CHUNK_SIZE) -> Iterator[str]:
        return render(
            self.format, self.filters, through_sequence=self.through_sequence, chunk_size=chunk_size
        )


def audit_log_export(*, actor: Actor, format: str, filters: EventFilters) -> Export:
    """Record an export of the log (it commits before any byte is sent) and describe it.

    The export covers the events up to and including its own record, oldest first.
    """
    if format not in FORMATS:
        raise ValidationError({"format": [f"One of: {', '.join(FORMATS)}."]}, code="invalid_format")
    require_audit_read(actor, "audit.exported")
    try:
        # Fails closed: an export reads the whole log, an unmetered one is a denial of service.
        ratelimit.hit(
            scope="audit_export",
            key=f"{actor.kind}:{actor.id or actor.label}",
            rate=settings.AUDIT_EXPORT_RATE,
            fail_closed=True,
            resource="export",
        )
    except errors.RateLimited:
        record(
            actor=actor,
            action="audit.exported",
            resource_type="audit_log",
            result=Result.DENIED,
            details={"reason": "Too many exports.", "format": format},
        )
        raise
    with transaction.atomic():
        event = record(
            actor=actor,
            action="audit.exported",
            resource_type="audit_log",
            details={
                "format": format,
                "filters": filters.as_params(),
                "whole_log": filters.is_empty,
            },
        )
    # The export runs through its own event: chain it (and everything before it) now.
    if event.sequence is None:
        sealing.seal()
        event.refresh_from_db(fields=["sequence"])
    stamp = event.occurred_at.strftime("%Y%m%dT%H%M%SZ")
    return Export(
        format=format,
        filters=filters,
        through_sequence=event.sequence,
        filename=f"audit-{event.tenant_id}-{stamp}.{FORMATS[format][2]}",
    )

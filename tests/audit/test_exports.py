"""Exports: JSON and CSV round-trip, CEF follows the format, one organization only, streamed."""

from __future__ import annotations

import csv
import io
import json
import re
import tracemalloc

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from audit import chain, exports, services
from audit.models import AuditEvent
from audit.selectors import EventFilters
from core.actors import Actor

SYSTEM = Actor.system("tests")
NASTY = 'pipe | back\\slash = equals "quoted", comma\nnew line\r\nCRLF'


@pytest.fixture
def nasty(acme):
    """Events whose values need every kind of escaping, at the end of organization A's log."""
    actor = Actor(
        kind="user", id="7", label='=HYPERLINK("x")|a\\b', ip="203.0.113.5", user_agent="-agent=1|x"
    )
    return [
        services.record(
            actor=actor,
            action="test.pipe|back\\slash",
            resource_type="doc",
            resource_id="id=1",
            result="denied",
            details={"note": NASTY, "n": 1, "list": [1, "two"], "unicode": "żółw ✓"},
        ),
        services.record(actor=SYSTEM, action="test.plain", details={}),
    ]


def export_text(fmt: str, filters: EventFilters = EventFilters(), chunk_size: int = 3) -> str:  # noqa: B008
    last = AuditEvent.objects.order_by("-sequence").values_list("sequence", flat=True).first()
    return "".join(exports.render(fmt, filters, through_sequence=last, chunk_size=chunk_size))


def stored_records() -> list[dict]:
    return [exports.event_record(event) for event in AuditEvent.objects.order_by("sequence")]


def test_json_round_trips_and_every_record_still_verifies(nasty):
    text = export_text("json")

    records = json.loads(text)
    assert records == stored_records()
    for record in records:
        event = AuditEvent(**{**record, "occurred_at": parse_datetime(record["occurred_at"])})
        assert chain.compute_hash(event) == record["hash"]


def test_json_has_one_event_per_line(nasty):
    lines = export_text("json").splitlines()

    assert lines[0] == "[" and lines[-1] == "]"
    body = [json.loads(line.rstrip(",")) for line in lines[1:-1]]
    assert body == stored_records()


def test_an_empty_export_is_valid_json(acme):
    text = export_text("json", EventFilters(action="nothing.matches"))

    assert json.loads(text) == []


def test_csv_round_trips(nasty):
    text = export_text("csv")

    rows = list(csv.reader(io.StringIO(text, newline="")))
    assert rows[0] == exports.FIELDS
    parsed = []
    for row in rows[1:]:
        record = dict(
            zip(exports.FIELDS, [exports.csv_unescape(cell) for cell in row], strict=True)
        )
        record["sequence"] = int(record["sequence"])
        record["details"] = json.loads(record["details"])
        record["ip"] = record["ip"] or None
        parsed.append(record)
    assert parsed == stored_records()


def test_csv_cells_cannot_run_as_spreadsheet_formulas(nasty):
    rows = list(csv.reader(io.StringIO(export_text("csv", EventFilters(actor_id="7")), newline="")))

    [row] = rows[1:]
    record = dict(zip(exports.FIELDS, row, strict=True))
    assert record["actor_label"] == '\'=HYPERLINK("x")|a\\b'
    assert record["user_agent"] == "'-agent=1|x"
    assert all(not cell.startswith(("=", "+", "-", "@")) for cell in row)


# --- CEF -----------------------------------------------------------------------------------------


def split_header(line: str) -> tuple[list[str], str]:
    """The 7 header fields (unescaped) and the raw extension, per the CEF rules."""
    fields, current, index = [], "", 0
    while len(fields) < 7:
        char = line[index]
        if char == "\\":
            current += line[index + 1]
            index += 2
            continue
        if char == "|":
            fields.append(current)
            current = ""
        else:
            current += char
        index += 1
    return fields, line[index:]


def parse_extension(text: str) -> dict[str, str]:
    pairs = {}
    # A key starts after a space and ends at the first (unescaped) `=`; `\=` never ends a key.
    for chunk in re.split(r" (?=[A-Za-z0-9_]+=)", text):
        key, value = chunk.split("=", 1)
        pairs[key] = re.sub(
            r"\\(.)", lambda m: {"n": "\n", "r": "\r"}.get(m.group(1), m.group(1)), value
        )
    return pairs


def test_cef_lines_follow_the_format_with_its_escaping(nasty):
    lines = export_text("cef", EventFilters(actor_id="7")).splitlines()

    [line] = lines
    event = nasty[0]
    header, extension = split_header(line)
    assert header == [
        "CEF:0",
        "AgentPlane",
        "AgentPlane",
        exports.product_version(),
        "test.pipe|back\\slash",
        "Test pipe|back\\slash (denied)",
        "7",
    ]
    # The raw text: header escapes | and \ ; the extension escapes \ and = and line breaks.
    assert "|test.pipe\\|back\\\\slash|" in line
    assert "\n" not in line and "\r" not in line
    assert "cs4=id\\=1" in extension
    values = parse_extension(extension)
    assert values == {
        "rt": str(int(event.occurred_at.timestamp() * 1000)),
        "externalId": str(event.sequence),
        "act": "test.pipe|back\\slash",
        "outcome": "denied",
        "suser": '=HYPERLINK("x")|a\\b',
        "suid": "7",
        "cs1Label": "tenantId",
        "cs1": event.tenant_id,
        "cs2Label": "actorKind",
        "cs2": "user",
        "cs3Label": "resourceType",
        "cs3": "doc",
        "cs4Label": "resourceId",
        "cs4": "id=1",
        "cs5Label": "details",
        "cs5": json.dumps(event.details, ensure_ascii=False, sort_keys=True),
        "cs6Label": "hash",
        "cs6": event.hash,
        "flexString1Label": "previousHash",
        "flexString1": event.previous_hash,
        "src": "203.0.113.5",
        "requestClientApplication": "-agent=1|x",
    }
    assert json.loads(values["cs5"])["note"] == NASTY


def test_cef_has_one_line_per_event(nasty):
    lines = export_text("cef").splitlines()

    assert len(lines) == AuditEvent.objects.count()
    assert all(line.startswith("CEF:0|AgentPlane|AgentPlane|") for line in lines)
    severities = {split_header(line)[0][6] for line in lines}
    assert severities <= {"3", "5", "7"}


@pytest.mark.parametrize(
    ("value", "header", "extension"),
    [
        ("a|b", "a\\|b", "a|b"),
        ("a\\b", "a\\\\b", "a\\\\b"),
        ("a=b", "a=b", "a\\=b"),
        ("a\nb", "a b", "a\\nb"),
        ("a\r\nb", "a b", "a\\nb"),
        ("a\rb", "a b", "a\\rb"),
        ("\\|=", "\\\\\\|=", "\\\\|\\="),
    ],
)
def test_cef_escaping_rules(value, header, extension):
    assert exports.cef_header_escape(value) == header
    assert exports.cef_extension_escape(value) == extension


def test_cef_names_an_ipv6_source_with_its_own_field(acme):
    services.record(actor=Actor(kind="user", id="1", label="u", ip="2001:db8::1"), action="test.v6")

    [line] = export_text("cef", EventFilters(action="test.v6")).splitlines()

    values = parse_extension(split_header(line)[1])
    assert values["c6a2"] == "2001:db8::1" and "src" not in values


# --- Scope ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["json", "csv", "cef"])
def test_an_export_never_contains_another_organizations_events(acme, other_org, in_tenant, fmt):
    with in_tenant(other_org):
        services.record(
            actor=SYSTEM, action="test.globex-secret", details={"marker": "GLOBEX-ONLY"}
        )
    services.record(actor=SYSTEM, action="test.acme-own")

    text = export_text(fmt)

    assert "GLOBEX-ONLY" not in text and "test.globex-secret" not in text
    assert str(other_org.tenant.public_id) not in text
    assert "test.acme-own" in text
    if fmt == "json":
        tenants = [record["tenant_id"] for record in json.loads(text)]
    elif fmt == "csv":
        tenants = [row[0] for row in list(csv.reader(io.StringIO(text, newline="")))[1:]]
    else:
        tenants = [parse_extension(split_header(line)[1])["cs1"] for line in text.splitlines()]
    assert tenants == [str(acme.tenant.public_id)] * AuditEvent.objects.count()


def test_an_export_stops_at_its_own_record(acme):
    export = exports.audit_log_export(
        actor=Actor.for_user(acme.admin), format="json", filters=EventFilters()
    )
    services.record(actor=SYSTEM, action="test.after-export")

    records = json.loads("".join(export.chunks()))

    assert records[-1]["action"] == "audit.exported"
    assert records[-1]["sequence"] == export.through_sequence
    assert all(record["action"] != "test.after-export" for record in records)


def test_filters_apply_to_exports(nasty):
    records = json.loads(
        export_text("json", EventFilters(result="denied", action="test.pipe|back\\slash"))
    )

    assert [record["sequence"] for record in records] == [nasty[0].sequence]


# --- Streaming -----------------------------------------------------------------------------------


def test_an_export_is_produced_lazily_one_chunk_per_query(acme):
    last = AuditEvent.objects.order_by("-sequence").values_list("sequence", flat=True).first()

    with CaptureQueriesContext(connection) as queries:
        chunks = exports.render("cef", EventFilters(), through_sequence=last, chunk_size=2)
        assert len(queries) == 0
        first = next(chunks)
        assert len(queries) == 1
        rest = list(chunks)

    assert first.count("\n") == 2
    assert len(rest) == (last - 2 + 1) // 2
    assert len(queries) == 1 + len(rest) + 1  # the last query finds no more rows


def _bulk(first: int, count: int) -> int:
    """Bulk rows (no chain: only memory is under test) with sequences first..first+count-1."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO audit_auditevent (tenant_id, sequence, occurred_at, actor_kind, actor_id,
                actor_label, action, resource_type, resource_id, result, ip, user_agent, details,
                previous_hash, hash)
            SELECT 'bulk', %s + n, %s, 'user', '1', 'bulk@acme.test', 'bulk.event', 'doc',
                n::text, 'success', '203.0.113.1', 'bench',
                jsonb_build_object('n', n, 'pad', repeat('x', 200)), repeat('0', 64),
                repeat('1', 64)
            FROM generate_series(0, %s - 1) AS n
            """,
            [first, timezone.now(), count],
        )
    return first + count - 1


def _peak(fmt: str, through: int) -> tuple[int, int]:
    """Peak traced memory while streaming the bulk rows up to `through`, and the bytes produced."""
    tracemalloc.start()
    try:
        size = 0
        for chunk in exports.render(
            fmt, EventFilters(action="bulk.event"), through_sequence=through, chunk_size=200
        ):
            size += len(chunk)
        return tracemalloc.get_traced_memory()[1], size
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("fmt", ["json", "csv", "cef"])
def test_export_memory_does_not_grow_with_the_log(acme, fmt):
    small_peak, small_size = _peak(fmt, _bulk(2_000_000, 400))
    big_peak, big_size = _peak(fmt, _bulk(2_001_000, 3200))

    assert big_size > 7 * small_size
    # Eight times the events, about the same peak: only one chunk is ever held.
    assert big_peak < 1.5 * small_peak, (small_peak, big_peak)

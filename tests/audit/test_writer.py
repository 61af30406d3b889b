"""The writer's side of the log: `record` and `emit` on their fast path (cleaning in one pass, one
prepared INSERT) give exactly what the general path and the ORM gave."""

from __future__ import annotations

import json
import math
import random
import uuid
from datetime import UTC, datetime

import pytest

from agents.models import InstanceStatus
from audit import chain, services
from audit.models import AuditEvent
from audit.verify import verify_chain
from core.actors import Actor


def round_trip(details):
    """clean_details as it was: redact, a JSON round trip, then the cleaning of strings."""
    return chain._clean_value(json.loads(json.dumps(chain.redact(details), default=str)))


TRICKY = [
    {},
    {"a": "b", "n": 1, "f": 1.5, "neg": -0.0, "t": True, "none": None, "big": 2**70},
    {"status": InstanceStatus.PENDING, "nested": {"status": InstanceStatus.RUNNING}},
    {"password": "hunter2", "nested": {"API_Key": {"deep": 1}, "ok": [1, {"token": "x"}]}},
    {"nul": "a\x00b", "surrogate": "\ud800x", "key\x00": 1, "k\ud800": "v", "é": "ü"},
    {"a\x00": 1, "a\ufffd": 2},  # two keys that clean to the same one: the later wins
    {"tuple": (1, 2), "set_like": [("a", 1)]},
    {"nan": math.nan, "inf": -math.inf},
    {1: "int key", "x": 2},
    {"uuid": uuid.UUID(int=7), "when": datetime(2026, 12, 3, tzinfo=UTC)},
    {"list": [[["deep"]], {"secret_thing": [1]}, "s"]},
    {"enum_key": {InstanceStatus.STOPPED: 1}},
]


@pytest.mark.parametrize("details", TRICKY)
def test_clean_details_is_the_json_round_trip(details):
    cleaned = chain.clean_details(details)
    assert cleaned == round_trip(details)
    assert json.dumps(cleaned, sort_keys=True) == json.dumps(round_trip(details), sort_keys=True)
    assert list(cleaned) == list(round_trip(details))  # the same keys in the same order


def test_clean_details_is_the_json_round_trip_on_random_values():
    pieces = ["a", "é", "\x00", "\ud83d", "\udc00", "password", "Token", "x" * 5, "1", ""]
    rng = random.Random(13)

    def text() -> str:
        return "".join(rng.choice(pieces) for _ in range(rng.randint(0, 4)))

    def value(depth: int):
        kind = rng.randint(0, 9 if depth < 4 else 5)
        if kind == 0:
            return text()
        if kind == 1:
            return rng.randint(-(2**40), 2**40)
        if kind == 2:
            return rng.choice([True, False, None, InstanceStatus.PENDING])
        if kind == 3:
            return rng.choice([0.1, -2.5, 1e300, math.nan, math.inf])
        if kind == 4:
            return rng.choice([uuid.UUID(int=rng.randint(0, 9)), (1, "a")])
        if kind == 5:
            return rng.randint(0, 3)
        if kind <= 7:
            return [value(depth + 1) for _ in range(rng.randint(0, 3))]
        return {
            (text() if rng.random() < 0.95 else rng.randint(0, 3)): value(depth + 1)
            for _ in range(rng.randint(0, 4))
        }

    for _ in range(3000):
        details = {text(): value(0) for _ in range(rng.randint(0, 5))}
        assert chain.clean_details(details) == round_trip(details), details


def test_clean_text_as_before():
    for value, limit in [("plain", 3), ("a\x00b", 10), ("\ud800é", 10), (12, 10), (None, 4)]:
        expected = chain.valid_utf8(str(value).replace("\x00", "\ufffd"))[:limit]
        assert chain.clean_text(value, limit) == expected


def test_the_insert_names_every_column_of_the_model():
    columns = [field.column for field in AuditEvent._meta.concrete_fields]
    assert columns == ["id", *services._EVENT_COLUMNS]
    listed = services._INSERT_EVENT.split("(", 1)[1].split(")", 1)[0]
    assert [name.strip() for name in listed.split(",")] == list(services._EVENT_COLUMNS)


def test_a_recorded_event_is_the_row_the_database_holds(acme):
    actor = Actor(
        kind="user",
        id="42",
        label="ana@acme.test",
        ip="::ffff:10.0.0.1",
        user_agent="agent\x00/1",
    )
    event = services.record(
        actor=actor,
        action="thing.done",
        resource_type="thing",
        resource_id=uuid.UUID(int=5),
        details={"status": InstanceStatus.PENDING, "password": "no", "n": [1, 2.5]},
    )
    stored = AuditEvent.objects.get(pk=event.pk)
    fields = [field.attname for field in AuditEvent._meta.concrete_fields]
    assert [getattr(event, name) for name in fields] == [getattr(stored, name) for name in fields]
    assert stored.details == {"status": "pending", "password": chain.REDACTED, "n": [1, 2.5]}
    assert not event._state.adding
    assert verify_chain(tenant_id=str(acme.tenant.public_id)).is_intact


def test_a_refused_record_inserts_nothing(acme):
    before = AuditEvent.objects.count()
    with pytest.raises(ValueError):
        services.record(actor=Actor.system(), action="x", result="maybe")
    assert AuditEvent.objects.count() == before

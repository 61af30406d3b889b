"""event_list: filters, newest first, keyset cursor, bad input, permissions, and index use."""

from __future__ import annotations

import datetime as dt

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import connection
from django.utils import timezone

from audit import selectors, services
from audit.models import AuditEvent
from audit.selectors import EventFilters
from core.actors import Actor
from tests.audit.conftest import events_after, head

SYSTEM = Actor.system("tests")


@pytest.fixture
def sample(acme):
    """A small, varied slice at the end of organization A's log."""
    admin, member = Actor.for_user(acme.admin), Actor.for_user(acme.member)
    recorded = [
        services.record(actor=admin, action="sample.created", resource_type="doc", resource_id=1),
        services.record(actor=member, action="sample.created", resource_type="doc", resource_id=2),
        services.record(
            actor=member,
            action="sample.deleted",
            resource_type="doc",
            resource_id=1,
            result="denied",
        ),
        services.record(actor=admin, action="sample.deleted", resource_type="doc", resource_id=1),
        services.record(actor=SYSTEM, action="sample.swept", result="failed"),
    ]
    return acme, recorded


def listed(reader, **filters) -> list[int]:
    page = selectors.event_list(actor=reader, filters=EventFilters(**filters), limit=200)
    return [event.sequence for event in page.events]


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({"action": "sample.created"}, [1, 0]),
        ({"actor": "member@acme.test", "action": "sample.deleted"}, [2]),
        ({"resource_type": "doc", "resource_id": "1"}, [3, 2, 0]),
        ({"result": "denied", "action": "sample.deleted"}, [2]),
        ({"actor_kind": "system", "action": "sample.swept"}, [4]),
        ({"action": "sample.nothing"}, []),
    ],
)
def test_filters_narrow_the_list_newest_first(sample, filters, expected):
    acme, recorded = sample

    sequences = listed(Actor.for_user(acme.admin), **filters)

    assert sequences == [recorded[index].sequence for index in expected]


def test_actor_id_filter(sample):
    acme, recorded = sample

    sequences = listed(
        Actor.for_user(acme.admin), actor_id=str(acme.admin.pk), action="sample.deleted"
    )

    assert sequences == [recorded[3].sequence]


def test_time_range_is_start_inclusive_end_exclusive(sample):
    acme, recorded = sample
    start, end = recorded[1].occurred_at, recorded[3].occurred_at

    sequences = listed(Actor.for_user(acme.admin), start=start, end=end)

    assert sequences == [recorded[2].sequence, recorded[1].sequence]


def test_the_cursor_walks_back_through_pages_without_gaps(sample):
    acme, recorded = sample
    actor = Actor.for_user(acme.admin)
    filters = EventFilters(resource_type="doc")

    first = selectors.event_list(actor=actor, filters=filters, limit=2)
    second = selectors.event_list(actor=actor, filters=filters, cursor=first.next_cursor, limit=2)

    assert [e.sequence for e in first.events] == [recorded[3].sequence, recorded[2].sequence]
    assert first.next_cursor == recorded[2].sequence
    assert [e.sequence for e in second.events] == [recorded[1].sequence, recorded[0].sequence]
    assert second.next_cursor is None


def test_a_new_event_does_not_shift_the_next_page(sample):
    acme, recorded = sample
    actor = Actor.for_user(acme.admin)
    first = selectors.event_list(
        actor=actor, filters=EventFilters(action="sample.created"), limit=1
    )

    services.record(actor=SYSTEM, action="sample.created")
    second = selectors.event_list(
        actor=actor,
        filters=EventFilters(action="sample.created"),
        cursor=first.next_cursor,
        limit=1,
    )

    assert [e.sequence for e in second.events] == [recorded[0].sequence]


def test_a_page_is_one_query(sample, django_assert_num_queries):
    acme, _ = sample
    actor = Actor.for_user(acme.admin)

    with django_assert_num_queries(1):
        selectors.event_list(actor=actor, filters=EventFilters(action="sample.created"), limit=50)


@pytest.mark.parametrize("role", ["viewer", "member"])
def test_reading_needs_audit_read_and_a_refusal_is_recorded(acme, role):
    start = head()

    with pytest.raises(PermissionDenied):
        selectors.event_list(actor=Actor.for_user(acme.user(role)))

    [event] = events_after(start)
    assert (event.action, event.result, event.actor_label) == (
        "audit.read",
        "denied",
        acme.user(role).email,
    )


@pytest.mark.parametrize("role", ["admin", "owner"])
def test_admins_and_owners_read(acme, role):
    page = selectors.event_list(actor=Actor.for_user(acme.user(role)), limit=1)
    assert len(page.events) == 1


def test_another_organizations_events_are_not_listed(acme, other_org, in_tenant):
    with in_tenant(other_org):
        foreign = services.record(actor=SYSTEM, action="sample.foreign")

    page = selectors.event_list(
        actor=Actor.for_user(acme.admin), filters=EventFilters(action="sample.foreign")
    )

    assert page.events == []
    assert foreign.tenant_id == str(other_org.tenant.public_id)


# --- Parsing query parameters --------------------------------------------------------------------


def test_filters_parse_from_query_parameters():
    filters = EventFilters.from_params(
        {
            "actor": " owner@acme.test ",
            "action": "member.role_changed",
            "result": "denied",
            "start": "2026-01-31",
            "end": "2026-02-01T12:30:00+01:00",
            "ignored": "x",
        }
    )

    assert filters == EventFilters(
        actor="owner@acme.test",
        action="member.role_changed",
        result="denied",
        start=dt.datetime(2026, 1, 31, tzinfo=dt.UTC),
        end=dt.datetime(2026, 2, 1, 11, 30, tzinfo=dt.UTC),
    )
    assert filters.as_params()["start"] == "2026-01-31T00:00:00+00:00"
    assert EventFilters.from_params({}).is_empty and not filters.is_empty


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"result": "maybe"}, "result"),
        ({"actor_kind": "robot"}, "actor_kind"),
        ({"start": "yesterday"}, "start"),
        ({"end": "2026-13-01"}, "end"),
        ({"start": "2026-02-01", "end": "2026-01-01"}, "end"),
        ({"action": "a" * 65}, "action"),
        ({"resource_id": "r" * 129}, "resource_id"),
        ({"action": "nul\x00byte"}, "action"),
        ({"start": "0001-01-01T00:00:00+01:00"}, "start"),
    ],
)
def test_bad_filters_are_refused_by_name(params, field):
    with pytest.raises(ValidationError) as error:
        EventFilters.from_params(params)
    assert list(error.value.message_dict) == [field]


@pytest.mark.parametrize("value", ["abc", "-1", "0", "1.5", "9" * 20])
def test_bad_cursors_are_refused(value):
    with pytest.raises(ValidationError):
        selectors.parse_cursor(value)


def test_strict_parsing_refuses_blank_dates_and_choices():
    assert EventFilters.from_params({"start": "", "result": ""}).is_empty
    with pytest.raises(ValidationError) as error:
        EventFilters.from_params({"start": "", "result": "", "action": ""}, strict=True)
    assert sorted(error.value.message_dict) == ["result", "start"]


def test_an_offset_is_kept_as_the_same_moment_in_utc():
    filters = EventFilters.from_params({"start": "2026-01-31T10:00:00+02:00"})
    assert filters.start == dt.datetime(2026, 1, 31, 8, 0, tzinfo=dt.UTC)


def test_cursor_and_limit_parse():
    assert selectors.parse_cursor("42") == 42 and selectors.parse_cursor("") is None
    assert selectors.parse_limit(None) == 50 and selectors.parse_limit("200") == 200
    for bad in ("", "0", "201", "x"):
        with pytest.raises(ValidationError):
            selectors.parse_limit(bad)


# --- Query plans ---------------------------------------------------------------------------------
# Honest plans: enough rows for the planner to care (60,000, statistics refreshed with ANALYZE),
# and no planner settings forced. The rows are bulk-inserted in the test's transaction (no chain:
# only the plan is under test) and rolled back with it.

ROWS = 60_000


@pytest.fixture
def big_log(acme):
    now = timezone.now()
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO audit_auditevent (tenant_id, sequence, occurred_at, actor_kind, actor_id,
                actor_label, action, resource_type, resource_id, result, ip, user_agent, details,
                previous_hash, hash)
            SELECT 'bulk', 1000000 + n, %s - make_interval(secs => %s - n), 'user',
                (n %% 400)::text, 'user' || (n %% 400) || '@acme.test',
                CASE WHEN n %% 500 = 0 THEN 'bulk.rare' ELSE 'bulk.action' || (n %% 30) END,
                'doc', (n %% 5000)::text,
                CASE WHEN n %% 100 = 0 THEN 'denied' ELSE 'success' END,
                NULL, '', '{}'::jsonb, repeat('0', 64), repeat('0', 64)
            FROM generate_series(1, %s) AS n
            """,
            [now, ROWS, ROWS],
        )
        cursor.execute("ANALYZE audit_auditevent")
    return now


def plan_of(queryset) -> str:
    return queryset.explain()


def page_query(filters: EventFilters, cursor: int | None = None):
    queryset = filters.apply(AuditEvent.objects.all())
    if cursor is not None:
        queryset = queryset.filter(sequence__lt=cursor)
    return queryset.order_by("-sequence")[:51]


def test_filtered_pages_are_index_scans_on_the_fitting_index(big_log):
    """One data set (it takes a second to build), every filter's plan checked against it."""
    cases = [
        # A selective filter uses its own index ...
        (EventFilters(action="bulk.rare"), None, "audit_action_idx"),
        (EventFilters(actor_id="13"), None, "audit_actor_idx"),
        (EventFilters(actor="user13@acme.test"), None, "audit_actor_label_idx"),
        (EventFilters(resource_type="doc", resource_id="4242"), None, "audit_res_idx"),
        (EventFilters(result="denied"), None, "audit_result_idx"),
        # ... also deep in the log, behind a cursor ...
        (EventFilters(action="bulk.rare"), 1_010_000, "audit_action_idx"),
        # ... and a common one (one event in thirty) walks the sequence index newest-first and
        # stops after 51 matches, which the planner rightly finds cheaper.
        (EventFilters(action="bulk.action7"), None, "audit_auditevent_sequence_key"),
    ]
    plans = {}
    for filters, cursor, index in cases:
        plan = plan_of(page_query(filters, cursor))
        if "Seq Scan" in plan or index not in plan:
            plans[f"{filters.as_params()} cursor={cursor}: expected {index}"] = plan
    assert plans == {}

    window = EventFilters(
        start=big_log - dt.timedelta(hours=2), end=big_log - dt.timedelta(hours=1)
    )
    plan = plan_of(page_query(window))
    assert "Seq Scan" not in plan and "Index" in plan, plan

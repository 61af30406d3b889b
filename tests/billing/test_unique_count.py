"""UNIQUE_COUNT meters: exact distinct counts per bucket and per range, live and rolled up."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import pytest
from django.utils import timezone

from billing import ledger, limits, services
from billing.models import UsageDistinct
from core.actors import Actor
from tenants import context

EVENTS = "/api/v1/usage/events"
BATCH = "application/cloudevents-batch+json"
METER = {
    "slug": "active_users",
    "name": "Active users",
    "event_type": "com.example.login",
    "aggregation": "UNIQUE_COUNT",
    "value_path": "user.id",
    "group_by": ["region"],
    "unit": "users",
}


@pytest.fixture(autouse=True)
def _fresh_limits():
    limits.forget()


def create_meter(client, **change):
    return client.post(
        "/api/v1/usage/meters/", {**METER, **change}, content_type="application/json"
    )


def login(event_id: str, user, region: str = "eu", at=None) -> dict:
    event = {
        "specversion": "1.0",
        "id": event_id,
        "source": "app",
        "type": "com.example.login",
        "data": {"user": {"id": user}, "region": region},
    }
    if at is not None:
        event["time"] = at.isoformat()
    return event


def send(client, events):
    response = client.post(EVENTS, data=json.dumps(events), content_type=BATCH)
    assert response.status_code == 202, response.content
    return response.json()


def report(client, **query):
    response = client.get("/api/v1/usage/", {"meter": "active_users", **query})
    assert response.status_code == 200, response.content
    return response.json()


def rollup(include_current: bool = False) -> ledger.RollupResult:
    return services.rollup(actor=Actor.system("tests"), include_current=include_current)


@pytest.fixture
def three_hours(org, client_for):
    """u1 logs in every hour, u2 two hours ago and now, u3 an hour ago (from another region), u4
    now: 2, 2 and 3 distinct users per hour, 4 over the three hours (not 7)."""
    admin = client_for(org, org.admin)
    assert create_meter(admin).status_code == 201
    now = timezone.now()
    hours = [now - timedelta(hours=2), now - timedelta(hours=1), now]
    events = [
        login("a", "u1", at=hours[0]),
        login("b", "u2", at=hours[0]),
        login("c", "u1", at=hours[1]),
        login("d", "u3", "us", at=hours[1]),
        login("e", "u1", at=hours[2]),
        login("f", "u2", at=hours[2]),
        login("g", "u4", at=hours[2]),
        login("h", "u4", at=hours[2]),  # the same user twice in one hour
    ]
    assert send(admin, events)["counted"] == 8
    return admin, hours[0].isoformat()


def hourly(body) -> list[int]:
    return [bucket["value"] for bucket in body["buckets"]][-3:]


def test_distinct_per_hour_and_over_the_range_are_exact(three_hours):
    admin, start = three_hours

    body = report(admin, granularity="hour", start=start)

    assert body["aggregation"] == "UNIQUE_COUNT"
    assert hourly(body) == [2, 2, 3]
    assert body["total"] == 4  # u1..u4, never the sum of the hours


def test_groups_count_distinct_in_each_bucket(three_hours):
    admin, start = three_hours

    body = report(admin, granularity="hour", start=start, group_by="region")

    assert [b["groups"] for b in body["buckets"]][-3:] == [
        {"eu": 2},
        {"eu": 1, "us": 1},
        {"eu": 3},
    ]
    assert body["total"] == 4


def test_the_rollup_across_hour_boundaries_keeps_every_figure(three_hours, org):
    admin, start = three_hours
    before = report(admin, granularity="hour", start=start)

    closed = rollup()  # the two closed hours move to PostgreSQL, the current one stays live
    partly = report(admin, granularity="hour", start=start)
    rollup(include_current=True)
    rolled = report(admin, granularity="hour", start=start)
    again = rollup(include_current=True)

    assert closed.distinct_values == 4 and closed.hashes == 2
    assert hourly(before) == hourly(partly) == hourly(rolled) == [2, 2, 3]
    assert before["total"] == partly["total"] == rolled["total"] == 4
    assert again.distinct_values == 0
    with context.public_context():
        stored = UsageDistinct.objects.filter(tenant_id=org.tenant.pk, meter="active_users")
        assert stored.count() == 7  # one row per (hour, groups, value)


def test_a_value_seen_again_after_its_hour_was_flushed_counts_once(org, client_for):
    admin = client_for(org, org.admin)
    assert create_meter(admin).status_code == 201
    send(admin, [login("1", "u1"), login("2", "u2")])
    rollup(include_current=True)  # the current hour, flushed: u1 and u2 in PostgreSQL
    send(admin, [login("3", "u1"), login("4", "u3")])  # u1 again, live in Redis

    assert report(admin, granularity="hour")["buckets"][-1]["value"] == 3
    assert report(admin)["total"] == 3
    rollup(include_current=True)
    assert report(admin)["total"] == 3
    assert report(admin, granularity="hour")["buckets"][-1]["value"] == 3


def test_day_buckets_and_the_period_total_count_distinct(three_hours):
    admin, first = three_hours
    hours = [datetime.fromisoformat(first) + timedelta(hours=n) for n in range(3)]
    users = [{"u1", "u2"}, {"u1", "u3"}, {"u1", "u2", "u4"}]
    expected: dict[str, set[str]] = {}
    for hour, seen in zip(hours, users, strict=True):
        expected.setdefault(hour.date().isoformat(), set()).update(seen)

    body = report(admin, granularity="day", start=(hours[0] - timedelta(days=1)).isoformat())

    values = {b["start"][:10]: b["value"] for b in body["buckets"] if b["value"]}
    assert values == {day: len(seen) for day, seen in expected.items()}
    assert body["total"] == 4
    summary = admin.get("/api/v1/usage/").json()
    (users,) = [m for m in summary["meters"] if m["meter"] == "active_users"]
    assert users["used"] == 4


def test_a_reported_event_seen_twice_adds_no_value(org, client_for):
    admin = client_for(org, org.admin)
    assert create_meter(admin).status_code == 201
    assert send(admin, [login("x", "u1")])["counted"] == 1
    assert send(admin, [login("x", "u9")])["duplicates"] == 1  # same (source, id): not counted

    assert report(admin)["total"] == 1


@pytest.mark.parametrize("value", [{"id": 1}, True, "", "x" * 129, "tab\there", None])
def test_an_event_without_a_countable_value_is_refused(org, client_for, value):
    admin = client_for(org, org.admin)
    assert create_meter(admin).status_code == 201
    event = login("bad", "u1")
    event["data"]["user"]["id"] = value

    response = admin.post(EVENTS, data=json.dumps([event]), content_type=BATCH)

    assert response.status_code == 400
    assert "data.user.id" in response.json()["error"]["detail"]  # one event: no index
    assert report(admin)["total"] == 0


def test_whole_numbers_and_their_text_are_one_value(org, client_for):
    admin = client_for(org, org.admin)
    assert create_meter(admin).status_code == 201

    send(admin, [login("1", 42), login("2", "42"), login("3", 7)])

    assert report(admin)["total"] == 2


def test_a_unique_count_meter_needs_a_value_path(org, client_for):
    admin = client_for(org, org.admin)

    response = create_meter(admin, value_path="")

    # The path the aggregation needs: a rule between fields, 422 (core.errors).
    assert response.status_code == 422
    assert "value_path" in response.json()["error"]["detail"]
    listed = admin.get("/api/v1/usage/meters/").json()
    assert "active_users" not in [m["slug"] for m in listed]


def test_the_openapi_document_offers_unique_count(org, client_for):
    schema = client_for(org, org.admin).get("/api/schema/?format=json").json()

    assert "UNIQUE_COUNT" in json.dumps(schema)


def test_another_organization_sees_none_of_it(org, other_org, client_for):
    a = client_for(org, org.admin)
    b = client_for(other_org, other_org.admin)
    assert create_meter(a).status_code == 201
    send(a, [login("1", "u1"), login("2", "u2")])

    assert b.get("/api/v1/usage/", {"meter": "active_users"}).status_code == 404
    assert create_meter(b).status_code == 201  # the same slug is B's own meter
    send(b, [login("1", "u1")])  # the same event id and user: B's own, counted for B
    rollup(include_current=True)

    assert report(a)["total"] == 2
    assert report(b)["total"] == 1
    with context.public_context():
        assert UsageDistinct.objects.filter(tenant_id=other_org.tenant.pk).count() == 1

"""A GET's rate-limit round trip overlaps its view's database reads (billing.throttles,
core.after_read): the Lua call is sent before the view and its reply read after it. Counted and
refused exactly as before; a write, and a read of the usage the request itself adds, wait for the
verdict before the view runs."""

from __future__ import annotations

import uuid

import pytest
from django.db import connection

from billing import limits
from core import after_read
from tenants import context, ratelimit
from tenants.models import Plan
from tests.credentials.helpers import api_key, api_key_header, error_code, post_json


@pytest.fixture
def trace(monkeypatch):
    """The order of the script's send, its reply's read and the SQL statements of a request
    (the real calls, observed)."""
    events: list[str] = []
    send, receive = ratelimit._send, ratelimit._receive

    def traced_send(*args):
        events.append("send")
        return send(*args)

    def traced_receive(*args):
        events.append("receive")
        return receive(*args)

    def traced_sql(execute, sql, params, many, context_):
        events.append("sql")
        return execute(sql, params, many, context_)

    monkeypatch.setattr(ratelimit, "_send", traced_send)
    monkeypatch.setattr(ratelimit, "_receive", traced_receive)
    with connection.execute_wrapper(traced_sql):
        yield events


def _between(events: list[str]) -> list[str]:
    """What ran between the (only) send and its read."""
    assert events.count("send") == events.count("receive") == 1, " ".join(events)
    return events[events.index("send") + 1 : events.index("receive")]


def _set_rpm(org, rpm: int) -> None:
    with context.public_context():
        Plan.objects.filter(pk=org.tenant.plan_id).update(requests_per_minute=rpm)
    limits.forget()


def test_a_reads_round_trip_overlaps_its_views_queries(org, client_for, trace):
    response = client_for(org, org.member).get("/api/v1/agents/")

    assert response.status_code == 200
    assert "sql" in _between(trace)  # the view's queries ran before the reply was read
    assert response["RateLimit"].startswith('"api";r=599;t=')


def test_a_write_reads_its_verdict_before_its_view_runs(org, client_for, trace):
    response = post_json(client_for(org, org.admin), "/api/v1/agents/", {})

    assert response.status_code == 400  # the view ran after the verdict, and refused the body
    assert _between(trace) == []
    assert response["RateLimit"].startswith('"api";r=599;t=')


def test_a_read_of_its_own_usage_waits_for_its_count(org, client_for, trace):
    key, raw = api_key(org, ["usage:read"])
    trace.clear()
    response = client_for(org).get(
        "/api/v1/usage/", {"meter": "api_requests", "granularity": "hour"}, **api_key_header(raw)
    )

    assert _between(trace) == []
    assert response.json()["total"] == 1  # its own request, counted before the report read it


def test_a_refused_read_answers_429_not_what_its_view_found(org, client_for):
    _set_rpm(org, 2)
    client = client_for(org, org.member)
    missing = f"/api/v1/agents/{uuid.uuid4()}/"

    answered = [client.get(missing) for _ in range(2)]
    refused = client.get(missing)
    listed = client.get("/api/v1/agents/")

    assert [r.status_code for r in answered] == [404, 404]
    assert refused.status_code == listed.status_code == 429
    assert error_code(refused) == error_code(listed) == "rate_limited"
    assert refused["RateLimit"] == f'"api";r=0;t={refused["Retry-After"]}'
    assert "results" not in listed.json()


def test_head_counts_like_get(org, client_for, trace):
    response = client_for(org, org.member).head("/api/v1/agents/")

    assert response.status_code == 200
    assert "sql" in _between(trace)
    assert response["RateLimit"].startswith('"api";r=599;t=')


def test_a_view_that_does_not_settle_reads_its_verdict_at_once(org, client_for, trace):
    """The OpenAPI document is DRF's own view (not core.api.ApiView): nothing would read a
    deferred verdict, so it is read before the view."""
    from drf_spectacular.views import SpectacularAPIView

    class Request:
        method = "GET"

    assert not after_read.settles_after_read(SpectacularAPIView(), Request())
    response = client_for(org, org.member).get("/api/schema/")

    assert response.status_code == 200
    assert _between(trace) == []
    assert response["RateLimit"].startswith('"api";r=599;t=')

"""The usage ledger: reported CloudEvents counted once, custom meters, reports with the live hour,
the rollup into PostgreSQL (across hours, idempotent, interrupted), and the numbers agreeing."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone

from audit.models import AuditEvent
from billing import ledger, limits, selectors, services
from billing.models import Meter, UsageBucket
from core.actors import Actor
from tenants import context
from tests.credentials.helpers import api_key, api_key_header, error_code

EVENTS = "/api/v1/usage/events"
ONE = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"


@pytest.fixture(autouse=True)
def _fresh_limits():
    limits.forget()


def tokens(event_id: str, model: str = "gpt-x", inp: int = 100, out: int = 20, **extra):
    return {
        "specversion": "1.0",
        "id": event_id,
        "source": "runtime/1",
        "type": "llm.tokens",
        "data": {"model": model, "input_tokens": inp, "output_tokens": out},
        **extra,
    }


def send(client, body, content_type=BATCH, **extra):
    return client.post(EVENTS, data=json.dumps(body), content_type=content_type, **extra)


def report(client, **query):
    response = client.get("/api/v1/usage/", query)
    assert response.status_code == 200, response.content
    return response.json()


def test_an_event_reported_twice_counts_once(org, client_for):
    client = client_for(org, org.member)

    first = send(client, tokens("e-1"), ONE)
    again = send(client, tokens("e-1"), ONE)

    assert first.status_code == again.status_code == 202
    assert first.json() == {"received": 1, "counted": 1, "duplicates": 0}
    assert again.json() == {"received": 1, "counted": 0, "duplicates": 1}
    assert first["RateLimit-Policy"] == '"usage_events";q=600;w=60'
    assert report(client, meter="llm_tokens")["total"] == 120


def test_a_batch_with_duplicates_counts_each_event_once(org, client_for):
    client = client_for(org, org.member)
    batch = [tokens("a"), tokens("b", model="other", inp=5, out=5), tokens("a"), tokens("c")]
    other_source = tokens("a", source="runtime/2")

    response = send(client, [*batch, other_source])

    assert response.json() == {"received": 5, "counted": 4, "duplicates": 1}
    body = report(client, meter="llm_tokens", granularity="hour", group_by="model")
    assert body["total"] == 120 * 3 + 10
    assert body["buckets"][-1]["groups"] == {"gpt-x": 360, "other": 10}
    by_direction = report(client, meter="llm_tokens", granularity="day", group_by="direction")
    assert by_direction["buckets"][-1]["groups"] == {"input": 305, "output": 65}


def test_an_invalid_event_refuses_the_whole_batch_and_counts_nothing(org, client_for):
    client = client_for(org, org.member)
    bad = [
        tokens("ok"),
        {**tokens("x"), "specversion": "0.3"},
        {**tokens("y"), "time": "2001-01-01T00:00:00Z"},
        {**tokens("z"), "data": {"model": "m", "input_tokens": -1}},
        {**tokens("w"), "id": ""},
        {**tokens("v"), "time": None},
        "not an object",
    ]

    response = send(client, bad)

    assert response.status_code == 400
    detail = response.json()["error"]["detail"]
    assert {name.split(".")[0] for name in detail} == {"1", "2", "3", "4", "5", "6"}
    assert "1.specversion" in detail and "2.time" in detail and "6.event" in detail
    assert report(client, meter="llm_tokens")["total"] == 0
    assert send(client, tokens("ok"), ONE).json()["counted"] == 1  # "ok" was not seen before


@pytest.mark.parametrize(
    ("body", "content_type", "status"),
    [
        (tokens("1"), "application/json", 415),
        ([tokens("1")], ONE, 400),
        (tokens("1"), BATCH, 400),
        ([], BATCH, 400),
        ([tokens(str(n)) for n in range(1001)], BATCH, 400),
    ],
)
def test_wrong_shapes_and_types_are_refused(org, client_for, body, content_type, status):
    response = send(client_for(org, org.member), body, content_type)
    assert response.status_code == status
    assert report(client_for(org, org.member), meter="usage_events")["total"] == 0


def test_reporting_needs_the_usage_report_permission(org, client_for):
    _, read_only = api_key(org, ["usage:read"])
    response = send(client_for(org), tokens("1"), ONE, **api_key_header(read_only))
    assert response.status_code == 403
    assert send(client_for(org, org.viewer), tokens("1"), ONE).status_code == 403
    assert send(client_for(org), tokens("1"), ONE).status_code == 401


def test_custom_meters_sum_max_and_count_with_groups(org, client_for, in_tenant):
    admin = client_for(org, org.admin)
    for slug, aggregation, path in (
        ("images", "SUM", "images"),
        ("peak_queue", "MAX", "queue"),
        ("renders", "COUNT", ""),
    ):
        created = admin.post(
            "/api/v1/usage/meters/",
            {
                "slug": slug,
                "name": slug.title(),
                "event_type": "com.example.render",
                "aggregation": aggregation,
                "value_path": path,
                "group_by": ["size"],
                "unit": "images",
            },
            content_type="application/json",
        )
        assert created.status_code == 201, created.content
    events = [
        {
            "specversion": "1.0",
            "id": str(n),
            "source": "renderer",
            "type": "com.example.render",
            "data": {"images": n, "queue": 10 - n, "size": "large" if n % 2 else "small"},
        }
        for n in range(1, 5)
    ]
    assert send(admin, events).json()["counted"] == 4

    assert report(admin, meter="images")["total"] == 10
    assert report(admin, meter="peak_queue")["total"] == 9
    renders = report(admin, meter="renders", group_by="size", granularity="hour")
    assert renders["total"] == 4
    assert renders["buckets"][-1]["groups"] == {"large": 2, "small": 2}
    with in_tenant(org):
        assert AuditEvent.objects.filter(action="meter.created").count() == 3
    slugs = [m["slug"] for m in admin.get("/api/v1/usage/meters/").json()]
    assert {"llm_tokens", "images", "peak_queue", "renders"} <= set(slugs)


@pytest.mark.parametrize(
    ("change", "field", "status"),
    [
        ({"slug": "llm_tokens"}, "slug", 400),
        ({"slug": "Bad Slug"}, "slug", 400),
        ({"aggregation": "AVG"}, "aggregation", 400),
        # Needed for SUM, refused for COUNT: OpenAPI 3.0 cannot say so (422).
        ({"value_path": ""}, "value_path", 422),
        ({"group_by": ["a"] * 6}, "group_by", 400),
        ({"unit": 0}, "unit", 400),
        ({"tenant": 1}, "tenant", 400),
    ],
)
def test_bad_meters_are_refused(org, client_for, change, field, status):
    body = {
        "slug": "images",
        "name": "Images",
        "event_type": "com.example.render",
        "aggregation": "SUM",
        "value_path": "images",
        **change,
    }
    response = client_for(org, org.admin).post(
        "/api/v1/usage/meters/", body, content_type="application/json"
    )
    assert response.status_code == status
    assert field in response.json()["error"]["detail"]
    with context.public_context():
        assert not Meter.objects.filter(tenant_id=org.tenant.pk).exists()


def test_members_cannot_define_meters(org, client_for):
    body = {"slug": "x1", "name": "X", "event_type": "t", "aggregation": "COUNT"}
    response = client_for(org, org.member).post(
        "/api/v1/usage/meters/", body, content_type="application/json"
    )
    assert response.status_code == 403
    with context.public_context():
        assert not Meter.objects.filter(tenant_id=org.tenant.pk).exists()


# The rollup -----------------------------------------------------------------------------------


def _system() -> Actor:
    return Actor.system("tests")


def test_the_rollup_moves_closed_hours_and_reports_do_not_change(org, client_for):
    client = client_for(org, org.member)
    now = timezone.now()
    hours_ago = [2, 1, 0]
    for index, ago in enumerate(hours_ago):
        at = (now - timedelta(hours=ago)).isoformat()
        send(client, tokens(f"h{index}", inp=10 * (index + 1), out=0, time=at), ONE)
    start = (now - timedelta(hours=3)).isoformat()
    before = report(client, meter="llm_tokens", granularity="hour", start=start)

    result = services.rollup(actor=_system())
    after = report(client, meter="llm_tokens", granularity="hour", start=start)

    assert before["total"] == after["total"] == 60
    assert [b["value"] for b in before["buckets"]] == [b["value"] for b in after["buckets"]]
    assert [b["value"] for b in after["buckets"]][-3:] == [10, 20, 30]
    with context.public_context():
        rolled = dict(
            UsageBucket.objects.filter(tenant_id=org.tenant.pk, meter="llm_tokens").values_list(
                "hour", "value"
            )
        )
    assert sorted(rolled.values()) == [10, 20]  # the current hour stays in Redis
    assert result.hashes >= 2
    again = services.rollup(actor=_system())
    assert again.counters == 0
    final = report(client, meter="llm_tokens", granularity="hour", start=start)
    assert (final["buckets"], final["total"]) == (after["buckets"], after["total"])


def test_the_rollup_with_the_current_hour_then_more_counts(org, client_for):
    client = client_for(org, org.member)
    send(client, tokens("1", inp=1, out=0), ONE)
    services.rollup(actor=_system(), include_current=True)
    send(client, tokens("2", inp=2, out=0), ONE)

    assert report(client, meter="llm_tokens")["total"] == 3
    services.rollup(actor=_system(), include_current=True)
    assert report(client, meter="llm_tokens")["total"] == 3
    with context.public_context():
        (bucket,) = UsageBucket.objects.filter(tenant_id=org.tenant.pk, meter="llm_tokens")
    assert bucket.value == 3


def test_a_rollup_interrupted_after_its_commit_never_counts_twice(org, client_for, monkeypatch):
    client = client_for(org, org.member)
    send(client, tokens("1", inp=7, out=0), ONE)
    # The process dies after the commit, before deleting what it moved aside in Redis.
    monkeypatch.setattr(ledger, "_FINISH", "return 1")
    services.rollup(actor=_system(), include_current=True)
    assert report(client, meter="llm_tokens")["total"] == 14  # PostgreSQL + the leftover hash
    monkeypatch.undo()

    result = services.rollup(actor=_system(), include_current=True)

    assert result.skipped == 1
    assert report(client, meter="llm_tokens")["total"] == 7


def test_only_the_platform_rolls_up(org):
    with pytest.raises(Exception, match="platform"):
        services.rollup(actor=Actor.for_user(org.owner))


# Reports --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "field", "status"),
    [
        ({"meter": "llm_tokens", "granularity": "week"}, "granularity", 400),
        # Well-formed: not one of this meter's groups (409), an empty or too long range (422).
        ({"meter": "llm_tokens", "group_by": "colour"}, "group_by", 409),
        (
            {"meter": "llm_tokens", "start": "2026-01-02T00:00:00Z", "end": "2026-01-01T00:00:00Z"},
            "end",
            422,
        ),
        (
            {"meter": "llm_tokens", "granularity": "hour", "start": "2020-01-01T00:00:00Z"},
            "end",
            422,
        ),
        ({"meter": "llm_tokens", "start": "yesterday"}, "start", 400),
        ({"meter": "Nope!"}, "meter", 400),
        ({"tenant": "x"}, "tenant", 400),
    ],
)
def test_bad_report_queries_are_refused(org, client_for, query, field, status):
    response = client_for(org, org.viewer).get("/api/v1/usage/", query)
    assert response.status_code == status
    assert field in response.json()["error"]["detail"]


def test_an_unknown_meter_is_404(org, client_for):
    response = client_for(org, org.viewer).get("/api/v1/usage/", {"meter": "nothing_here"})
    assert response.status_code == 404


def test_the_summary_lists_every_meter_against_its_quota(org, client_for):
    client = client_for(org, org.member)
    send(client, tokens("1"), ONE)
    body = client.get("/api/v1/usage/").json()
    by_meter = {m["meter"]: m for m in body["meters"]}
    assert by_meter["llm_tokens"]["used"] == 120
    with context.public_context():
        assert by_meter["gateway_messages"]["quota"] == org.tenant.plan.messages_per_month
    assert body["period_start"].endswith("-01T00:00:00Z")


def test_a_day_report_has_one_bucket_per_day_with_zeros(org, client_for):
    client = client_for(org, org.member)
    end = datetime.now(UTC)
    start = end - timedelta(days=3)
    body = report(client, meter="api_requests", start=start.isoformat(), end=end.isoformat())
    assert len(body["buckets"]) == 4
    assert body["buckets"][0]["start"].endswith("T00:00:00Z")
    assert body["total"] == 1  # this request


# Cross-tenant ----------------------------------------------------------------------------------


def test_another_organization_sees_none_of_it(org, other_org, client_for):
    a = client_for(org, org.admin)
    b = client_for(other_org, other_org.admin)
    a.post(
        "/api/v1/usage/meters/",
        {"slug": "secret_meter", "name": "S", "event_type": "t.x", "aggregation": "COUNT"},
        content_type="application/json",
    )
    send(a, tokens("shared-id"), ONE)

    # B reports the same (source, id): its own event, counted for B.
    assert send(b, tokens("shared-id"), ONE).json()["counted"] == 1
    assert report(b, meter="llm_tokens")["total"] == 120
    assert report(a, meter="llm_tokens")["total"] == 120
    assert "secret_meter" not in [m["slug"] for m in b.get("/api/v1/usage/meters/").json()]
    assert b.get("/api/v1/usage/", {"meter": "secret_meter"}).status_code == 404
    summary = b.get("/api/v1/usage/").json()
    assert "secret_meter" not in [m["meter"] for m in summary["meters"]]
    # A's credentials on B's host are refused.
    _, raw = api_key(org, ["usage:read", "usage:report"])
    assert b.get("/api/v1/usage/", **api_key_header(raw)).status_code == 401
    assert send(client_for(other_org), tokens("z"), ONE, **api_key_header(raw)).status_code == 401
    # A tenant named in the query changes nothing.
    response = b.get("/api/v1/usage/", {"meter": "llm_tokens", "tenant": str(org.tenant.pk)})
    assert response.status_code == 400 and error_code(response) == "invalid"


def test_the_usage_api_the_quota_and_the_refusals_agree(org, client_for, in_tenant):
    """Replay mixed traffic: tasks up to the monthly message quota and past it, API reads,
    reported tokens; then the Usage API, the 429s and the ledger after a rollup agree."""
    from tenants.models import Tenant

    with context.public_context():
        Tenant.objects.filter(pk=org.tenant.pk).update(messages_per_month_override=7)
    gateway_cache = __import__("gateway.services", fromlist=["_limits_cache"])._limits_cache
    gateway_cache.clear()
    client = client_for(org, org.admin)
    statuses = []
    for n in range(10):
        statuses.append(
            client.post(
                "/api/v1/tasks/", {"task": {"n": n}}, content_type="application/json"
            ).status_code
        )
        client.get("/api/v1/agents/")
        send(client, tokens(f"t{n}", inp=n, out=1), ONE)
    gateway_cache.clear()

    assert statuses == [202] * 7 + [429] * 3
    live = report(client, meter="gateway_messages")["total"]
    services.rollup(actor=_system(), include_current=True)
    rolled = report(client, meter="gateway_messages")["total"]
    summary = {m["meter"]: m for m in client.get("/api/v1/usage/").json()["meters"]}
    assert live == rolled == summary["gateway_messages"]["used"] == 7
    assert summary["gateway_messages"]["quota"] == 7
    assert summary["tasks"]["used"] == 7
    assert summary["llm_tokens"]["used"] == sum(range(10)) + 10
    assert (
        client.get("/api/v1/quota/").json()["messages_this_month"]["used"]
        == summary["gateway_messages"]["used"]
    )
    with in_tenant(org):
        refusals = AuditEvent.objects.filter(action="task.published", result="denied").count()
    assert refusals == 3
    assert (
        selectors.meter_total(
            tenant=org.tenant,
            meter="gateway_messages",
            start=timezone.now() - timedelta(days=1),
            end=timezone.now() + timedelta(hours=1),
        )
        == 7
    )


def test_usage_keys_carry_the_organization(org, client_for):
    send(client_for(org, org.member), tokens(uuid.uuid4().hex), ONE)
    client = __import__("tenants.ratelimit", fromlist=["redis_client"]).redis_client()
    keys = [k.decode() for k in client.keys("agentplane:usage:*")]
    org_keys = [k for k in keys if k not in (ledger.PENDING,)]
    assert org_keys and all(str(org.tenant.public_id) in k for k in org_keys)


def test_the_same_counts_of_two_organizations_are_charged_each_to_its_own(org, other_org):
    """`usage_add` has no window or quota that names the organization: the prepared call it
    reuses must still be the organization's own (a shared cache key once charged B's usage
    to A)."""
    now = timezone.now()
    start = now.replace(minute=0, second=0, microsecond=0)
    counts = [ledger.Count("tool_cpu_ms", 3, {"tool": "same-name"})]

    def total(tenant):
        return selectors.meter_total(
            tenant=tenant, meter="tool_cpu_ms", start=start, end=start + timedelta(hours=1)
        )

    before = total(org.tenant), total(other_org.tenant)
    services.usage_add(tenant=org.tenant, counts=counts)
    services.usage_add(tenant=other_org.tenant, counts=counts)
    services.usage_add(tenant=other_org.tenant, counts=counts)

    assert (total(org.tenant), total(other_org.tenant)) == (before[0] + 3, before[1] + 6)

"""Plan limits per resource on the API: 429 with Retry-After and the IETF RateLimit headers,
exact across processes, per organization, and the policy when Redis cannot be reached."""

from __future__ import annotations

import multiprocessing
import uuid

import pytest

from billing import limits
from billing.models import UsageBucket
from tenants import context, ratelimit
from tenants.models import Plan
from tests.credentials.helpers import api_key, api_key_header, error_code

DEAD_REDIS = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": "redis://127.0.0.1:1/0",
        "OPTIONS": {"socket_connect_timeout": 0.2, "socket_timeout": 0.2},
    }
}


@pytest.fixture(autouse=True)
def _fresh_limits():
    limits.forget()
    yield
    limits.forget()


def _set_rpm(org, rpm: int) -> None:
    with context.public_context():
        Plan.objects.filter(pk=org.tenant.plan_id).update(requests_per_minute=rpm)
    limits.forget()


def test_every_api_response_carries_the_policy_it_counted_against(org, client_for):
    client = client_for(org, org.member)

    first = client.get("/api/v1/agents/")
    second = client.get("/api/v1/quota/")

    assert first.status_code == second.status_code == 200
    assert first["RateLimit-Policy"] == '"api";q=600;w=60'
    assert first["RateLimit"].startswith('"api";r=599;t=')
    assert second["RateLimit"].startswith('"api";r=598;t=')
    assert 1 <= int(second["RateLimit"].rsplit("=", 1)[1]) <= 60


def test_a_burst_of_100_on_the_free_plan_serves_60(org, client_for):
    _set_rpm(org, 60)  # the Free plan's requests per minute
    client = client_for(org, org.member)

    statuses = [client.get("/api/v1/agents/").status_code for _ in range(100)]
    refused = client.get("/api/v1/agents/")

    assert statuses.count(200) == 60 and statuses.count(429) == 40
    assert statuses[:60] == [200] * 60
    assert error_code(refused) == "rate_limited"
    assert 1 <= int(refused["Retry-After"]) <= 60
    assert refused["RateLimit-Policy"] == '"api";q=60;w=60'
    assert refused["RateLimit"] == f'"api";r=0;t={refused["Retry-After"]}'


def test_one_organization_at_its_limit_does_not_limit_another(org, other_org, client_for):
    """Same person (the same email exists in both), same address: separate counters."""
    _set_rpm(org, 5)
    address = "10.9.8.7"
    a = client_for(org, org.member)
    b = client_for(other_org, other_org.member)
    assert org.member.email.split("@")[0] == other_org.member.email.split("@")[0]

    a_statuses = [a.get("/api/v1/agents/", REMOTE_ADDR=address).status_code for _ in range(7)]
    b_response = b.get("/api/v1/agents/", REMOTE_ADDR=address)

    assert a_statuses == [200] * 5 + [429] * 2
    assert b_response.status_code == 200
    # Both are on the same plan (5 a minute here): B's own counter has 4 left.
    assert b_response["RateLimit"].startswith('"api";r=4;')


def test_sign_in_does_not_count_against_the_api_limit(org, client_for):
    _set_rpm(org, 1)
    client = client_for(org)
    for _ in range(3):
        response = client.post(
            "/api/v1/auth/token",
            data={"username": org.member.email, "password": "wrong"},
            content_type="application/json",
        )
        assert response.status_code == 401
        assert "RateLimit-Policy" not in response


def test_api_requests_are_metered_per_api_key(org, client_for):
    key, raw = api_key(org, ["agents:read", "usage:read"])
    client = client_for(org)
    for _ in range(3):
        assert client.get("/api/v1/agents/", **api_key_header(raw)).status_code == 200

    report = client.get(
        "/api/v1/usage/",
        {"meter": "api_requests", "granularity": "hour", "group_by": "api_key"},
        **api_key_header(raw),
    ).json()

    # The report's own request counts too: it is metered before it runs.
    assert report["total"] == 4
    assert report["buckets"][-1]["groups"] == {str(key.pk): 4}


def test_redis_unreachable_api_fails_open_and_still_meters(org, client_for, settings):
    settings.CACHES = DEAD_REDIS
    client = client_for(org, org.member)

    responses = [client.get("/api/v1/agents/") for _ in range(3)]

    assert [r.status_code for r in responses] == [200] * 3
    assert "RateLimit-Policy" not in responses[0]
    with context.public_context():
        bucket = UsageBucket.objects.get(tenant_id=org.tenant.pk, meter="api_requests")
    assert bucket.value == 3


def test_redis_unreachable_usage_events_fail_closed(org, client_for, settings):
    settings.CACHES = DEAD_REDIS
    event = {"specversion": "1.0", "id": "1", "source": "rt", "type": "llm.tokens"}
    event["data"] = {"model": "m", "input_tokens": 1, "output_tokens": 1}
    response = client_for(org, org.member).post(
        "/api/v1/usage/events", data=event, content_type="application/cloudevents+json"
    )

    assert response.status_code == 503
    assert error_code(response) == "rate_limiter_unavailable"
    assert response["Retry-After"] == "30"
    with context.public_context():
        assert not UsageBucket.objects.filter(tenant_id=org.tenant.pk).exists()


def _hammer(key: str, attempts: int, queue) -> None:
    allowed = 0
    for _ in range(attempts):
        try:
            ratelimit.consume(windows=[ratelimit.Window(key=key, limit=100, seconds=60)])
            allowed += 1
        except ratelimit.RateLimited:
            pass
    queue.put(allowed)


def test_500_requests_from_4_processes_against_a_limit_of_100_allow_exactly_100(db):
    key = f"agentplane:rl:test:{uuid.uuid4().hex}"
    processes_context = multiprocessing.get_context("fork")
    queue = processes_context.Queue()
    attempts = [125, 125, 125, 125]
    workers = [processes_context.Process(target=_hammer, args=(key, n, queue)) for n in attempts]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    allowed = [queue.get(timeout=5) for _ in workers]

    assert sum(attempts) == 500
    assert sum(allowed) == 100
    assert all(worker.exitcode == 0 for worker in workers)


def test_a_window_keeps_its_count_at_its_edge(db):
    """The key's expiry is set once, when the window starts: counts never restart mid-window
    (django-ratelimit's add-then-incr lost them at the rollover, issue 10 item 8)."""
    client = ratelimit.redis_client()
    key = f"agentplane:rl:test:{uuid.uuid4().hex}"
    window = ratelimit.Window(key=key, limit=3, seconds=1)
    for _ in range(3):
        ratelimit.consume(windows=[window])
    ttl_after_three = client.pttl(key)
    with pytest.raises(ratelimit.RateLimited) as refused:
        ratelimit.consume(windows=[window])

    assert 0 < ttl_after_three <= 1000
    assert refused.value.retry_after == 1
    assert int(client.get(key)) == 3  # a refusal does not count


def test_a_request_refused_by_a_later_limit_counts_nothing(db):
    """Windows are counted first and taken back when a later window or a quota refuses."""
    client = ratelimit.redis_client()
    prefix = f"agentplane:rl:test:{uuid.uuid4().hex}"
    roomy = ratelimit.Window(key=f"{prefix}:roomy", limit=10, seconds=60)
    full = ratelimit.Window(key=f"{prefix}:full", limit=1, seconds=60)
    quota = ratelimit.Quota(key=f"{prefix}:quota", limit=5, amount=1, ttl_seconds=60)
    charge = ratelimit.Charge(hash_key=f"{prefix}:hash", field="meter\t{}", amount=1)
    client.set(quota.key, 5)
    ratelimit.consume(windows=[full])

    with pytest.raises(ratelimit.RateLimited):
        ratelimit.consume(windows=[roomy, full], charges=[charge])
    with pytest.raises(ratelimit.QuotaPassed):
        ratelimit.consume(windows=[roomy], quotas=[quota], charges=[charge])
    client.delete(quota.key)
    missing = ratelimit.consume(windows=[roomy], quotas=[quota], charges=[charge])

    assert missing.missing_quota == quota and missing.counted == 0
    assert int(client.get(roomy.key)) == 0
    assert 0 < client.pttl(roomy.key) <= 60_000
    assert int(client.get(full.key)) == 1
    assert not client.exists(charge.hash_key)


def test_a_hash_is_indexed_when_a_charge_creates_a_field(db):
    client = ratelimit.redis_client()
    prefix = f"agentplane:usage:test:{uuid.uuid4().hex}"
    index = (f"{prefix}:index", "member")

    def charge(field: str) -> list[ratelimit.Charge]:
        return [ratelimit.Charge(hash_key=f"{prefix}:hash", field=field, amount=2)]

    ratelimit.consume(charges=charge("a"), index_sets=[index], hash_ttl_seconds=100)
    client.delete(index[0])
    ratelimit.consume(charges=charge("a"), index_sets=[index], hash_ttl_seconds=100)
    assert not client.exists(index[0])  # the field existed: no index write
    client.rename(f"{prefix}:hash", f"{prefix}:moved")  # a rollup moved the hash aside
    ratelimit.consume(charges=charge("a"), index_sets=[index], hash_ttl_seconds=100)

    assert client.smembers(index[0]) == {b"member"}
    assert client.hgetall(f"{prefix}:hash") == {b"a": b"2"}
    assert 0 < client.ttl(f"{prefix}:hash") <= 100


def test_a_connection_the_server_closed_is_replaced_and_the_request_counted_once(db):
    """The script's connections are kept apart from redis-py's pool: one that Redis closed
    (a restart, an idle timeout) fails on its next use and the call is made again on a new one."""
    client = ratelimit.redis_client()
    # Earlier tests may have left more than one (a read's call in flight while its view made
    # another): start from none, so that this call's is the only one.
    for stale in ratelimit._idle.pop(id(client), []):
        stale.disconnect()
    key = f"agentplane:rl:test:{uuid.uuid4().hex}"
    window = ratelimit.Window(key=key, limit=10, seconds=60)
    ratelimit.consume(windows=[window])
    (connection,) = ratelimit._idle[id(client)]
    connection.send_command("CLIENT", "ID")
    client.client_kill_filter(_id=connection.read_response())

    outcome = ratelimit.consume(windows=[window])

    assert outcome.usages[0].remaining == 8
    assert int(client.get(key)) == 2
    assert ratelimit._idle[id(client)] == [connection] and connection._sock is not None


def test_a_change_of_limits_applies_to_the_next_request_in_this_process(org):
    """request_admit reuses its call while the limits it was built from are unchanged: a plan
    change (limits.forget, as every staff change does) applies to the very next request."""
    from billing import services

    _set_rpm(org, 50)
    with context.tenant_context(org.tenant):
        first = services.request_admit(resource="api")
        again = services.request_admit(resource="api")
        _set_rpm(org, 7)
        changed = services.request_admit(resource="api")
        key = api_key(org, ["agents:read"])[0]
        key.rate_limits = {"api": {"limit": 3, "window_seconds": 60}}
        own = services.request_admit(resource="api", api_key=key)

    assert first.headers["RateLimit-Policy"] == '"api";q=50;w=60'
    assert again.headers["RateLimit"].startswith('"api";r=48;')
    assert changed.headers["RateLimit-Policy"] == '"api";q=7;w=60'
    assert changed.headers["RateLimit"].startswith('"api";r=4;')
    assert own.headers["RateLimit-Policy"] == '"api.key";q=3;w=60'


def test_calls_from_an_event_loop_are_exact_in_order_and_fail_closed(db, settings):
    """`run_async` (the gateway's publishes): 300 calls at once against a limit of 100 allow
    exactly the first 100, in the order they were made; Redis unreachable is `Unreachable`."""
    import asyncio

    key = f"agentplane:rl:test:{uuid.uuid4().hex}"
    prepared = ratelimit.Prepared(windows=[ratelimit.Window(key=key, limit=100, seconds=3600)])

    async def attempt() -> bool:
        try:
            await ratelimit.run_async(prepared)
        except ratelimit.RateLimited:
            return False
        return True

    async def burst() -> list[bool]:
        return await asyncio.gather(*(attempt() for _ in range(300)))

    outcomes = asyncio.run(burst())
    assert outcomes == [True] * 100 + [False] * 200
    assert int(ratelimit.redis_client().get(key)) == 100

    settings.CACHES = DEAD_REDIS
    with pytest.raises(ratelimit.Unreachable):
        asyncio.run(ratelimit.run_async(prepared))


def test_a_change_made_elsewhere_applies_from_the_next_period(org):
    """Another process's change that reaches this one only through the database (no
    invalidation) applies from the next period of limits.TTL_SECONDS: never later."""
    from billing import services

    _set_rpm(org, 50)
    with context.tenant_context(org.tenant):
        first = services.request_admit(resource="api")
        with context.public_context():  # as another process would: the row, not the caches
            Plan.objects.filter(pk=org.tenant.plan_id).update(requests_per_minute=9)
        same_period = services.request_admit(resource="api")
        start, number = limits._origin
        limits._origin = (start - limits.TTL_SECONDS, number)  # one period later
        next_period = services.request_admit(resource="api")

    assert first.headers["RateLimit-Policy"] == '"api";q=50;w=60'
    assert same_period.headers["RateLimit-Policy"] == '"api";q=50;w=60'
    assert next_period.headers["RateLimit-Policy"] == '"api";q=9;w=60'
    assert next_period.headers["RateLimit"].startswith('"api";r=6;')

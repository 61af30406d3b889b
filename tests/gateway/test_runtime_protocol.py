"""Agent runtimes over the socket: attach, heartbeats and metrics, config, and tenant isolation of
every database read a consumer makes (one worker serving A, then B)."""

from __future__ import annotations

import asyncio

import pytest

from tests.conftest import PASSWORD
from tests.gateway.conftest import (
    Client,
    api_key,
    host_of,
    in_org,
    make_agent,
    make_instance,
    run,
)

pytestmark = pytest.mark.usefixtures("unblocked")
RUNTIME_SCOPES = ["agents:read", "agents:write"]


def instance_row(org, instance_id):
    from agents.models import AgentInstance

    return in_org(org, lambda: AgentInstance.objects.get(pk=instance_id))


def test_a_consumer_for_b_right_after_one_for_a_reads_b_data(pair, layer):
    a, b = pair
    agent_a, agent_b = make_agent(a, name=f"Alpha {layer}"), make_agent(b, name=f"Beta {layer}")
    instance_a, instance_b = make_instance(a, agent_a), make_instance(b, agent_b)
    key_a, key_b = api_key(a, RUNTIME_SCOPES), api_key(b, RUNTIME_SCOPES)

    async def body():
        first, second = Client(host_of(a)), Client(host_of(b))
        await first.connect()
        await first.auth(key_a)
        attached_a = await first.request(op="attach", instance=str(instance_a.pk))
        await second.connect()
        await second.auth(key_b)
        attached_b = await second.request(op="attach", instance=str(instance_b.pk))
        # Interleaved on the same worker: each reads its own organization's rows.
        again_a = await first.request(op="config")
        stolen = await second.request(op="attach", instance=str(instance_a.pk))
        await first.close()
        await second.close()
        return attached_a, attached_b, again_a, stolen

    attached_a, attached_b, again_a, stolen = run(body)
    assert attached_a["agent"]["name"] == f"Alpha {layer}"
    assert attached_b["agent"]["name"] == f"Beta {layer}"
    assert again_a["op"] == "config"
    # A's instance id on B's socket: the same answer as an id that does not exist.
    assert stolen["error"]["code"] == "not_found"
    assert instance_row(a, instance_a.pk).status == "running"
    assert instance_row(b, instance_b.pk).status == "running"


def test_heartbeats_store_metrics_per_minute_and_announce_them(pair, layer):
    from gateway.models import InstanceMetric

    a, _ = pair
    agent = make_agent(a)
    instance = make_instance(a, agent)
    runtime_key = api_key(a, RUNTIME_SCOPES)
    metrics = {
        "cpu_percent": 12.5,
        "memory_mb": 80.0,
        "queue_depth": 2,
        "response_ms": 31.0,
        "tasks_done": 7,
    }

    async def body():
        runtime, portal = Client(host_of(a)), Client(host_of(a))
        for client in (runtime, portal):
            await client.connect()
            await client.auth(runtime_key)
        await portal.request(op="subscribe", subject="agents.*.metrics")
        attached = await runtime.request(op="attach", instance=str(instance.pk))
        assert attached["status"] == "running"
        beat = await runtime.request(op="heartbeat", metrics=metrics)
        assert beat == {"op": "heartbeat", "ref": beat["ref"], "status": "running"}
        event = await portal.next_event()
        too_soon = await runtime.request(op="heartbeat", metrics=metrics)
        assert too_soon["error"]["code"] == "rate_limited"
        await asyncio.sleep(1.0)
        bad = await runtime.request(op="heartbeat", metrics={"cpu_percent": -1})
        await asyncio.sleep(1.0)
        unknown = await runtime.request(op="heartbeat", metrics={"disk": 1})
        await runtime.close()
        await portal.close()
        return event, bad, unknown

    event, bad, unknown = run(body)
    assert event["subject"] == f"agents.{agent.pk}.metrics"
    assert {k: event["data"][k] for k in metrics} == metrics
    assert bad["error"]["code"] == "invalid"
    assert unknown["error"]["code"] == "invalid"
    rows = in_org(a, lambda: list(InstanceMetric.objects.filter(instance_id=instance.pk)))
    assert len(rows) == 1
    assert (rows[0].cpu_percent, rows[0].tasks_done, rows[0].agent_id) == (12.5, 7, agent.pk)
    assert instance_row(a, instance.pk).last_heartbeat_at is not None


def test_heartbeat_and_config_need_an_attached_instance(pair, layer):
    a, _ = pair
    runtime_key = api_key(a, RUNTIME_SCOPES)

    async def body():
        client = Client(host_of(a))
        await client.connect()
        await client.auth(runtime_key)
        replies = [await client.request(op=op) for op in ("heartbeat", "config", "detach")]
        await client.close()
        return replies

    assert [r["error"]["code"] for r in run(body)] == ["not_attached"] * 3


def test_attach_needs_agents_write(pair, layer):
    a, _ = pair
    instance = make_instance(a, make_agent(a))
    read_only = api_key(a, ["agents:read"])

    async def body():
        client = Client(host_of(a))
        await client.connect()
        await client.auth(read_only)
        reply = await client.request(op="attach", instance=str(instance.pk))
        await client.close()
        return reply

    assert run(body)["error"]["code"] == "permission_denied"
    assert instance_row(a, instance.pk).status == "pending"


def test_an_attached_agent_publishes_results_without_tasks_publish(pair, layer):
    a, _ = pair
    agent = make_agent(a)
    instance = make_instance(a, agent)
    runtime_key = api_key(a, RUNTIME_SCOPES)

    async def body():
        client = Client(host_of(a))
        await client.connect()
        await client.auth(runtime_key)
        before = await client.request(op="publish", subject="agents.result.t1", data={})
        await client.request(op="attach", instance=str(instance.pk))
        result = await client.request(op="publish", subject="agents.result.t1", data={"ok": 1})
        own = await client.request(op="publish", subject=f"agents.{agent.pk}.log", data={})
        other = await client.request(op="publish", subject="agents.task", data={})
        detached = await client.request(op="detach", status="stopped")
        await client.close()
        return before, result, own, other, detached

    before, result, own, other, detached = run(body)
    assert before["error"]["code"] == "permission_denied"
    assert (result["op"], own["op"]) == ("ack", "ack")
    assert other["error"]["code"] == "permission_denied"
    assert detached["status"] == "stopped"
    assert instance_row(a, instance.pk).status == "stopped"


def _session_cookie(org, user) -> str:
    from django.test import Client as HttpClient

    from tenants import context

    http = HttpClient(HTTP_HOST=org.host)
    with context.tenant_context(org.tenant):
        http.force_login(user)
    return http.cookies["sessionid"].value


def test_a_browser_session_authenticates_from_its_own_origin_only(pair, layer):
    a, b = pair
    cookie = _session_cookie(a, a.viewer)
    host = org_host = a.tenant.host
    headers = [(b"cookie", f"sessionid={cookie}".encode())]

    async def body():
        same = Client(host_of(a), [*headers, (b"origin", f"http://{org_host}".encode())])
        await same.connect()
        ready = await same.receive()
        assert (await same.request(op="subscribe", subject="instance.>"))["op"] == "subscribed"
        await same.close()
        # Another organization's page (same site, other host) cannot ride the session.
        foreign = Client(host_of(a), [*headers, (b"origin", f"http://{b.tenant.host}".encode())])
        await foreign.connect()
        await foreign.send(op="subscribe", subject=">")
        refused = await foreign.receive()
        # The cookie on B's host is no session there.
        elsewhere = Client(host_of(b), [*headers, (b"origin", f"http://{b.tenant.host}".encode())])
        await elsewhere.connect()
        await elsewhere.send(op="subscribe", subject=">")
        refused_b = await elsewhere.receive()
        return ready, refused, refused_b

    ready, refused, refused_b = run(body)
    assert ready["op"] == "ready" and ready["via"] == "session" and host
    assert refused["error"]["code"] == "unauthenticated"
    assert refused_b["error"]["code"] == "unauthenticated"


def test_stale_instances_are_marked_failed(pair):
    from datetime import timedelta

    from django.utils import timezone

    from agents.models import AgentInstance
    from core.actors import Actor
    from gateway import services

    a, _ = pair
    stale, fresh = make_instance(a, make_agent(a)), make_instance(a, make_agent(a))
    old = timezone.now() - timedelta(seconds=120)

    def arrange():
        AgentInstance.objects.filter(pk=stale.pk).update(status="running", last_heartbeat_at=old)
        AgentInstance.objects.filter(pk=fresh.pk).update(
            status="running", last_heartbeat_at=timezone.now()
        )
        return services.instances_fail_stale(actor=Actor.system("tests"), timeout_seconds=60)

    failed = in_org(a, arrange)
    assert str(stale.pk) in failed and str(fresh.pk) not in failed
    assert instance_row(a, stale.pk).status == "failed"
    assert instance_row(a, fresh.pk).status == "running"


def test_a_member_held_at_the_two_factor_setup_has_no_socket(pair, layer):
    """Required two-factor authentication: the member's browser session opens no socket until it
    is set up (as it opens no page); the owner, who has it, connects."""
    import pyotp

    from accounts import services as account_services
    from accounts import two_factor
    from core.actors import Actor
    from organizations import services as organization_services
    from tenants import context, routing

    a, _ = pair
    owner = Actor.for_user(a.owner)
    secret = two_factor.new_secret()
    with context.tenant_context(a.tenant):
        account_services.two_factor_enable(
            actor=owner,
            encrypted_secret=two_factor.encrypt_secret(secret, user_id=a.owner.pk),
            code=pyotp.TOTP(secret).now(),
            keep_session_key="",
        )
        organization_services.two_factor_requirement_set(actor=owner, required=True)
    routing.clear()
    origin = (b"origin", f"http://{a.tenant.host}".encode())
    cookies = {user.pk: _session_cookie(a, user) for user in (a.member, a.owner)}

    async def connect(user):
        headers = [(b"cookie", f"sessionid={cookies[user.pk]}".encode()), origin]
        client = Client(host_of(a), headers)
        await client.connect()
        await client.send(op="subscribe", subject="instance.>")
        answer = await client.receive()
        await client.close()
        return answer

    async def body():
        return await connect(a.member), await connect(a.owner)

    try:
        member, owner_answer = run(body)
    finally:  # the module's organizations are shared: leave A as it was
        with context.tenant_context(a.tenant):
            organization_services.two_factor_requirement_set(actor=owner, required=False)
            account_services.two_factor_disable(actor=owner, proof=PASSWORD, keep_session_key="")
        routing.clear()
    assert member["error"]["code"] == "unauthenticated"
    assert owner_answer["op"] == "ready" and owner_answer["via"] == "session"

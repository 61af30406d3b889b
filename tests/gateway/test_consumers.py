"""The gateway consumer on the real channel layers: auth, subscribe, publish, isolation, limits."""

from __future__ import annotations

import pytest

from tests.gateway.conftest import Client, api_key, host_of, jwt_for, run, settle

pytestmark = pytest.mark.usefixtures("unblocked")


def denied_events(org, action: str) -> list:
    from audit.models import AuditEvent
    from tenants import context

    with context.tenant_context(org.tenant):
        return list(
            AuditEvent.objects.filter(action=action, result="denied")
            .order_by("sequence")
            .values_list("resource_id", "details")
        )


# --- Connecting and authenticating -------------------------------------------------------------


def test_unknown_host_is_refused_at_the_handshake(pair, layer):
    async def body():
        client = Client(b"nobody.localhost")
        connected, code = await client.connect()
        assert (connected, code) == (False, 4404)

    run(body)


def test_api_key_authenticates_with_the_first_message(pair, layer):
    a, _ = pair
    key = api_key(a, ["agents:read"])

    async def body():
        client = Client(host_of(a))
        assert (await client.connect())[0] is True
        reply = await client.auth(key)
        assert reply["op"] == "ready"
        assert reply["tenant"] == str(a.tenant.public_id)
        await client.close()

    run(body)


def test_jwt_authenticates_with_the_first_message(pair, layer):
    a, _ = pair
    token = jwt_for(a, "viewer")

    async def body():
        client = Client(host_of(a))
        await client.connect()
        assert (await client.auth(token))["op"] == "ready"
        assert (await client.request(op="subscribe", subject="agents.>"))["op"] == "subscribed"
        await client.close()

    run(body)


@pytest.mark.parametrize("credential", ["api_key", "jwt"])
def test_a_credential_of_a_on_b_host_is_refused(pair, layer, credential):
    a, b = pair
    raw = api_key(a, ["agents:read"]) if credential == "api_key" else jwt_for(a)

    async def body():
        client = Client(host_of(b))
        await client.connect()
        reply = await client.auth(raw)
        assert reply["error"]["code"] in {"api_key_invalid", "token_invalid"}
        assert await client.closed_with() == 4401

    run(body)


def test_anything_before_auth_is_refused_and_closes(pair, layer):
    a, _ = pair

    async def body():
        client = Client(host_of(a))
        await client.connect()
        await client.send(op="subscribe", subject=">")
        assert (await client.receive())["error"]["code"] == "unauthenticated"
        assert await client.closed_with() == 4401

    run(body)


def test_a_bad_token_is_refused(pair, layer):
    a, _ = pair

    async def body():
        client = Client(host_of(a))
        await client.connect()
        reply = await client.auth("agp_" + "x" * 50)
        assert reply["error"]["code"] == "api_key_invalid"
        assert await client.closed_with() == 4401

    run(body)


# --- Subscribing and isolation -----------------------------------------------------------------


CROSS_TENANT_SPELLINGS = [
    "tenant.{a}.>",
    "TENANT.{a}.>",
    "Tenant.{a}.agents.task",
    "../tenant.{a}.>",
    "..tenant.{a}.>",
    "tenant..{a}.>",
    ".tenant.{a}.>",
    "tenant.{a}..>",
    "tenant.*.>",
    "tenant.>",
    "t\u0435nant.{a}.>",  # a Cyrillic "е"
    "tenant\uff0e{a}\uff0e>",  # fullwidth full stops
    "agents.>.x",
    "agents..task",
    "agents.task.",
    "",
    "a/b",
    "agents.ta sk",
    "\x00tenant.{a}.>",  # NUL: refused, and audited without breaking the audit insert
    ".".join(["x"] * 17),
    "x" * 257,
]


@pytest.mark.parametrize("spelling", CROSS_TENANT_SPELLINGS)
def test_cross_tenant_and_invalid_subscriptions_are_refused_and_audited(pair, layer, spelling):
    a, b = pair
    subject = spelling.format(a=a.tenant.public_id)
    key = api_key(b, ["agents:read"])
    before = len(denied_events(b, "gateway.subscribe"))

    async def body():
        client = Client(host_of(b))
        await client.connect()
        await client.auth(key)
        reply = await client.request(op="subscribe", subject=subject)
        assert reply["error"]["code"] in {"subject_invalid", "subject_forbidden"}
        await client.close()

    run(body)
    denied = denied_events(b, "gateway.subscribe")
    assert len(denied) == before + 1
    assert denied[-1][0] == subject[:128].replace("\x00", "\ufffd")


def test_events_of_a_never_reach_b_even_with_the_widest_subscription(pair, layer):
    a, b = pair
    key_a = api_key(a, ["agents:read", "tasks:publish"])
    key_b = api_key(b, ["agents:read"])

    async def body():
        publisher, listener_a, listener_b = (
            Client(host_of(a)),
            Client(host_of(a)),
            Client(host_of(b)),
        )
        for client, key in ((publisher, key_a), (listener_a, key_a), (listener_b, key_b)):
            await client.connect()
            await client.auth(key)
        for pattern in (">", "*.task", "agents.>", "agents.task", "*.*"):
            await listener_b.request(op="subscribe", subject=pattern)
        await listener_a.request(op="subscribe", subject=">")
        ack = await publisher.request(op="publish", subject="agents.task", data={"n": 1})
        assert ack["op"] == "ack"
        event = await listener_a.next_event()
        assert event["subject"] == "agents.task"
        assert event["tenant"] == str(a.tenant.public_id)
        assert event["data"] == {"n": 1}
        assert await listener_b.nothing(0.5)
        for client in (publisher, listener_a, listener_b):
            await client.close()

    run(body)


def test_wildcards_follow_nats_semantics_and_deliver_once(pair, layer):
    a, _ = pair
    key = api_key(a, ["agents:read", "tasks:publish"])

    async def body():
        publisher, listener = Client(host_of(a)), Client(host_of(a))
        for client in (publisher, listener):
            await client.connect()
            await client.auth(key)
        # Several patterns matching one subject: the event still arrives once.
        for pattern in ("agents.*.metrics", "agents.>", "agents.x1.metrics", ">"):
            await listener.request(op="subscribe", subject=pattern)
        await publisher.request(op="publish", subject="agents.x1.metrics", data={"cpu": 1})
        event = await listener.next_event()
        assert (event["subject"], event["data"]) == ("agents.x1.metrics", {"cpu": 1})
        assert await listener.nothing(0.3)
        # Narrow again: only `agents.*.metrics` is left.
        for pattern in ("agents.>", "agents.x1.metrics", ">"):
            await listener.request(op="unsubscribe", subject=pattern)
        await publisher.request(op="publish", subject="agents.x1", data={})
        await publisher.request(op="publish", subject="agents.x1.metrics.extra", data={})
        await publisher.request(op="publish", subject="agents.x2.metrics", data={"cpu": 2})
        event = await listener.next_event()
        assert (event["subject"], event["data"]) == ("agents.x2.metrics", {"cpu": 2})
        assert await listener.nothing(0.3)
        await publisher.close()
        await listener.close()

    run(body)


def test_the_server_stamps_tenant_and_timestamp(pair, layer):
    a, _ = pair
    key = api_key(a, ["agents:read", "tasks:publish"])

    async def body():
        client = Client(host_of(a))
        await client.connect()
        await client.auth(key)
        await client.request(op="subscribe", subject="chat")
        await client.request(
            op="publish",
            subject="chat",
            data={"x": 1},
            tenant="someone-else",
            timestamp="1999-01-01T00:00:00Z",
        )
        event = await client.next_event()
        assert event["tenant"] == str(a.tenant.public_id)
        assert event["timestamp"] > "2000"
        await client.close()

    run(body)


# --- Scopes ------------------------------------------------------------------------------------


def test_subscribe_needs_a_read_scope_and_publish_needs_tasks_publish(pair, layer):
    a, _ = pair
    key = api_key(a, ["config:read"])
    before = len(denied_events(a, "gateway.publish"))

    async def body():
        client = Client(host_of(a))
        await client.connect()
        await client.auth(key)
        reply = await client.request(op="subscribe", subject="agents.>")
        assert reply["error"]["code"] == "permission_denied"
        reply = await client.request(op="publish", subject="agents.task", data={})
        assert reply["error"]["code"] == "permission_denied"
        await client.close()

    run(body)
    assert len(denied_events(a, "gateway.publish")) == before + 1


def test_a_viewer_session_token_cannot_publish(pair, layer):
    a, _ = pair
    token = jwt_for(a, "viewer")

    async def body():
        client = Client(host_of(a))
        await client.connect()
        await client.auth(token)
        reply = await client.request(op="publish", subject="agents.task", data={})
        assert reply["error"]["code"] == "permission_denied"
        await client.close()

    run(body)


# --- Limits ------------------------------------------------------------------------------------


def test_an_oversized_frame_is_refused_and_closes_with_1009(pair, layer):
    a, _ = pair
    key = api_key(a, ["agents:read", "tasks:publish"])

    async def body():
        client = Client(host_of(a))
        await client.connect()
        await client.auth(key)
        await client.send(op="publish", subject="big", data="x" * (64 * 1024))
        assert (await client.receive())["error"]["code"] == "message_too_large"
        assert await client.closed_with() == 1009

    run(body)


def test_publishes_past_the_connection_rate_are_refused(pair, layer, settings):
    a, _ = pair
    # Fixed windows: an hour, unlike a minute, practically never rolls over during the test.
    settings.GATEWAY_PUBLISH_RATE_PER_CONNECTION = "5/h"
    key = api_key(a, ["agents:read", "tasks:publish"])

    async def body():
        client = Client(host_of(a))
        await client.connect()
        await client.auth(key)
        replies = [
            await client.request(op="publish", subject="tick", data={"n": n}) for n in range(7)
        ]
        assert [r.get("op") or r["error"]["code"] for r in replies] == ["ack"] * 5 + [
            "rate_limited"
        ] * 2
        assert replies[-1]["error"]["retry_after"] >= 1
        await client.close()

    run(body)


def test_the_monthly_message_quota_is_enforced(pair, layer):
    from gateway import services
    from tests.billing.helpers import clear_usage, messages_used, record_usage

    a, _ = pair
    key = api_key(a, ["agents:read", "tasks:publish"])
    quota = services._monthly_quota(a.tenant)
    record_usage(a.tenant, "gateway_messages", quota - 2)

    async def body():
        client = Client(host_of(a))
        await client.connect()
        await client.auth(key)
        replies = [await client.request(op="publish", subject="q", data={}) for _ in range(3)]
        assert [r.get("op") or r["error"]["code"] for r in replies] == [
            "ack",
            "ack",
            "quota_exceeded",
        ]
        refused = replies[-1]["error"]
        assert refused["detail"]["quota"] == {
            "name": "gateway_messages_per_month",
            "meter": "gateway_messages",
            "limit": quota,
        }
        assert refused["retry_after"] >= 1
        await client.close()

    try:
        run(body)
        assert messages_used(a.tenant) == quota
        assert denied_events(a, "gateway.publish")[-1][1] == {"reason": "quota_exceeded"}
    finally:
        clear_usage(a.tenant)


def test_a_subscriber_that_falls_behind_is_disconnected_with_4008(pair, layer, settings):
    from gateway import consumers

    a, _ = pair
    settings.GATEWAY_QUEUE_SIZE = 3
    key = api_key(a, ["agents:read", "tasks:publish"])
    original = consumers.EventsConsumer._write

    async def slow_write(self):  # a subscriber whose socket never drains once subscribed
        import asyncio

        stuck = False
        while True:
            frame = await self.outbox.get()
            if stuck:
                await asyncio.Event().wait()
            await self.send(text_data=frame)
            stuck = stuck or '"subscribed"' in frame

    async def body():
        consumers.EventsConsumer._write = slow_write
        try:
            publisher, slow = Client(host_of(a)), Client(host_of(a))
            await publisher.connect()
            await publisher.auth(key)
            await slow.connect()
            await slow.auth(key)
            await slow.request(op="subscribe", subject="flood")
            for n in range(10):
                await publisher.request(op="publish", subject="flood", data={"n": n})
            await settle(0.2)
            assert await slow.closed_with() == 4008
            # The publisher is unaffected.
            assert (await publisher.request(op="ping"))["op"] == "pong"
            await publisher.close()
        finally:
            consumers.EventsConsumer._write = original

    run(body)


# --- Revocation --------------------------------------------------------------------------------


def test_a_socket_loses_its_connection_when_its_key_is_revoked(pair, layer, settings):
    from core.actors import Actor
    from credentials import services as credential_services
    from tenants import context

    a, _ = pair
    settings.GATEWAY_RECHECK_SECONDS = 0.3
    settings.API_KEY_CREATE_RATE = "100000/h"
    with context.tenant_context(a.tenant):
        key, raw = credential_services.api_key_create(
            actor=Actor.for_user(a.admin), name="soon revoked", scopes=["agents:read"]
        )

    async def body():
        client = Client(host_of(a))
        await client.connect()
        await client.auth(raw)
        assert (await client.request(op="ping"))["op"] == "pong"
        return client

    async def after(client):
        refused = await client.receive(timeout=5)
        code = await client.closed_with()
        return refused, code

    async def scenario():
        client = await body()
        from channels.db import database_sync_to_async

        def revoke():
            with context.tenant_context(a.tenant):
                credential_services.api_key_revoke(actor=Actor.for_user(a.admin), key_id=key.pk)

        await database_sync_to_async(revoke)()
        return await after(client)

    refused, code = run(scenario)
    assert refused["error"]["code"] == "api_key_revoked"
    assert code == 4401


def test_a_socket_of_a_suspended_organization_is_closed(pair, layer, settings):
    from core.actors import Actor
    from organizations import services
    from tenants import routing

    a, _ = pair
    settings.GATEWAY_RECHECK_SECONDS = 0.3
    key = api_key(a, ["agents:read"])

    async def scenario():
        from channels.db import database_sync_to_async

        client = Client(host_of(a))
        await client.connect()
        await client.auth(key)
        await database_sync_to_async(services.tenant_suspend)(
            actor=Actor.system("tests"), tenant=a.tenant, reason="tests"
        )
        refused = await client.receive(timeout=5)
        return refused, await client.closed_with()

    try:
        refused, code = run(scenario)
    finally:
        services.tenant_reactivate(actor=Actor.system("tests"), tenant=a.tenant)
        routing.clear()
    assert refused["error"]["code"] == "organization_unavailable"
    assert code == 4401


def test_a_client_looping_on_refused_frames_is_cut_off(pair, layer):
    from gateway.consumers import MAX_REFUSALS

    _, b = pair
    key = api_key(b, ["agents:read"])
    before = len(denied_events(b, "gateway.subscribe"))

    async def body():
        client = Client(host_of(b))
        await client.connect()
        await client.auth(key)
        for _ in range(MAX_REFUSALS):
            await client.send(op="subscribe", subject="tenant.x")
        frames = [await client.receive() for _ in range(MAX_REFUSALS + 1)]
        return frames, await client.closed_with()

    frames, code = run(body)
    assert frames[-1]["error"]["code"] == "too_many_refusals"
    assert code == 4429
    assert len(denied_events(b, "gateway.subscribe")) == before + MAX_REFUSALS


def test_publishes_in_flight_keep_the_order_of_replies_and_events(pair, layer, settings):
    """Publishes sent without waiting are admitted together, but their replies, their refusals
    and their events keep the order of the frames, and a later frame waits for them. The
    month's message counter starts missing (a new month, Redis lost it): it is seeded before the
    first publish, not by calls sent again behind later ones."""
    from billing import services as billing_services

    a, _ = pair
    settings.GATEWAY_PUBLISH_RATE_PER_CONNECTION = "30/h"
    billing_services.quota_forget(tenant=a.tenant)
    key = api_key(a, ["agents:read", "tasks:publish"])

    async def body():
        publisher, listener = Client(host_of(a)), Client(host_of(a))
        for client in (publisher, listener):
            await client.connect()
            await client.auth(key)
        await listener.request(op="subscribe", subject="orders.*")
        for n in range(40):
            await publisher.send(op="publish", subject="orders.placed", data={"n": n}, ref=n)
        await publisher.send(op="ping", ref="last")
        replies = [await publisher.receive(timeout=10) for _ in range(41)]
        assert [r["ref"] for r in replies] == [*range(40), "last"]
        assert [r.get("op") or r["error"]["code"] for r in replies] == (
            ["ack"] * 30 + ["rate_limited"] * 10 + ["pong"]
        )
        events = [await listener.next_event(timeout=10) for _ in range(30)]
        assert [e["data"]["n"] for e in events] == list(range(30))
        assert len({e["id"] for e in events}) == 30
        assert await listener.nothing(0.3)
        await publisher.close()
        await listener.close()

    run(body)

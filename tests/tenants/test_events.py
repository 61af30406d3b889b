"""Events handed over from synchronous code: the caller does not wait, the order is kept."""

from __future__ import annotations

import asyncio
import uuid

from channels.layers import get_channel_layer

from tenants import events


def test_events_handed_over_from_sync_code_arrive_in_order():
    tenant_id = uuid.uuid4().hex
    subject = "orders.placed"
    layer = get_channel_layer()

    async def subscribe() -> str:
        channel = await layer.new_channel()
        await layer.group_add(events.group_name(tenant_id, subject), channel)
        return channel

    loop = asyncio.new_event_loop()
    try:
        channel = loop.run_until_complete(subscribe())
        for number in range(30):
            message = events.event_message(tenant_id, subject, {"n": number})
            events.send_from_sync(tenant_id, subject, message)
        assert events.flush(timeout=10)

        async def receive_all() -> list[int]:
            return [
                (await asyncio.wait_for(layer.receive(channel), 5))["data"]["n"] for _ in range(30)
            ]

        assert loop.run_until_complete(receive_all()) == list(range(30))
    finally:
        loop.close()


def test_events_nobody_subscribed_to_are_handed_over_and_later_ones_still_arrive():
    """Events without any subscriber do not hold up the events after them."""
    tenant_id = uuid.uuid4().hex
    layer = get_channel_layer()

    async def subscribe() -> str:
        channel = await layer.new_channel()
        await layer.group_add(events.group_name(tenant_id, "watched"), channel)
        return channel

    loop = asyncio.new_event_loop()
    try:
        channel = loop.run_until_complete(subscribe())
        for number in range(20):
            subject = "watched" if number % 4 == 0 else "nobody.listens"
            message = events.event_message(tenant_id, subject, {"n": number})
            events.send_from_sync(tenant_id, subject, message)
        assert events.flush(timeout=10)

        async def receive_all() -> list[int]:
            return [
                (await asyncio.wait_for(layer.receive(channel), 5))["data"]["n"] for _ in range(5)
            ]

        assert loop.run_until_complete(receive_all()) == [0, 4, 8, 12, 16]
    finally:
        loop.close()


def test_the_layer_sends_a_burst_of_group_sends_in_order_and_decodes_each_copy_apart():
    """The pub/sub layer's publishes are queued and pipelined (tenants.layers): 200 sent at once
    arrive in order, once each; two sockets of one process get equal, separate messages."""
    from django.conf import settings

    from tenants.layers import PubSubChannelLayer

    # The layer itself, on the tests' Redis, whichever layer the settings chose.
    layer = PubSubChannelLayer(hosts=[settings.REDIS_URL], prefix=f"test-{uuid.uuid4().hex}")
    group = events.group_name(uuid.uuid4().hex, "orders.placed")

    async def body() -> tuple[list[int], list[dict]]:
        first, second = await layer.new_channel(), await layer.new_channel()
        for channel in (first, second):
            await layer.group_add(group, channel)
        await asyncio.gather(
            *(layer.group_send(group, {"type": "t", "n": n, "data": {}}) for n in range(200))
        )
        got = [await asyncio.wait_for(layer.receive(first), 5) for _ in range(200)]
        copies = [await asyncio.wait_for(layer.receive(second), 5) for _ in range(200)]
        await layer.flush()
        return got, copies

    loop = asyncio.new_event_loop()
    try:
        got, copies = loop.run_until_complete(body())
    finally:
        loop.close()
    assert [m["n"] for m in got] == list(range(200))
    assert copies == got
    assert all(c is not m for c, m in zip(copies, got, strict=True))


def _subscribed(layer, groups):
    """A loop with one channel in each of `groups`, and a `receive(channel)` on it."""
    loop = asyncio.new_event_loop()

    async def subscribe() -> list[str]:
        channels = []
        for group in groups:
            channel = await layer.new_channel()
            await layer.group_add(group, channel)
            channels.append(channel)
        return channels

    channels = loop.run_until_complete(subscribe())

    def receive(channel: str) -> dict:
        return loop.run_until_complete(asyncio.wait_for(layer.receive(channel), 5))

    return loop, channels, receive


def test_the_sync_publisher_sends_each_event_to_every_group_of_its_batch_in_order():
    """tenants.layers.SyncPublisher: the PUBLISHes the layer's own group_send makes (its channel
    names and serializer), each event once to each of its groups, a batch in order."""
    from tenants.layers import SyncPublisher

    layer = get_channel_layer()
    tenant_id = uuid.uuid4().hex
    exact, prefix = events.groups_for(tenant_id, "orders.placed")[:2]
    loop, (on_exact, on_prefix), receive = _subscribed(layer, [exact, prefix])
    publisher = SyncPublisher(layer)
    try:
        batch = [
            (events.groups_for(tenant_id, "orders.placed"), {"type": "t", "n": n}) for n in range(5)
        ]
        batch.insert(2, ([prefix], {"type": "t", "n": "prefix only"}))
        publisher.publish(batch)
        assert [receive(on_exact)["n"] for _ in range(5)] == [0, 1, 2, 3, 4]
        assert [receive(on_prefix)["n"] for _ in range(6)] == [0, 1, "prefix only", 2, 3, 4]
    finally:
        publisher.close()
        loop.close()


def test_events_still_arrive_after_redis_closed_the_publishers_connection():
    """Redis drops the publishing thread's connection (a restart, a timeout, CLIENT KILL): the
    next events go out on a new one."""
    import redis
    from django.conf import settings

    layer = get_channel_layer()
    tenant_id = uuid.uuid4().hex
    group = events.group_name(tenant_id, "orders.placed")
    loop, (channel,), receive = _subscribed(layer, [group])
    try:
        events.send_from_sync(tenant_id, "orders.placed", {"type": "t", "n": 0})
        assert events.flush(timeout=10)
        assert receive(channel)["n"] == 0

        # This process's publishing connection, idle after the flush, closed by the server.
        (connection,) = events._publisher()._client._connections
        host, port = connection._sock.getsockname()[:2]
        admin = redis.Redis.from_url(settings.REDIS_URL)
        assert admin.client_kill_filter(addr=f"{host}:{port}") == 1
        admin.close()
        for number in (1, 2, 3):
            events.send_from_sync(tenant_id, "orders.placed", {"type": "t", "n": number})
            assert events.flush(timeout=10)
        # At most once: the first event after the kill may be lost with the dead connection.
        got = []
        while len(got) < 3:
            try:
                got.append(receive(channel)["n"])
            except TimeoutError:
                break
        assert got[-1] == 3 and got == sorted(got)
    finally:
        loop.close()

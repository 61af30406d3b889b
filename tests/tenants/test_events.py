"""Events handed over from synchronous code: the caller does not wait, the order is kept."""

from __future__ import annotations

import asyncio
import uuid

from asgiref.sync import async_to_sync
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
    """A batch asks which groups have members first; events without any are not sent, and do
    not hold up the events after them."""
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


def test_the_in_memory_layer_is_not_asked_when_no_group_has_a_member(settings, monkeypatch):
    from channels.layers import channel_layers

    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    channel_layers.backends.pop("default", None)
    try:
        layer = get_channel_layer()
        tenant_id = uuid.uuid4().hex
        sent = []
        real = events.async_to_sync

        def counting(function):
            sent.append(function)
            return real(function)

        monkeypatch.setattr(events, "async_to_sync", counting)
        events.send_from_sync(tenant_id, "a.b", events.event_message(tenant_id, "a.b", {}))
        assert sent == []

        async def subscribe() -> str:
            channel = await layer.new_channel()
            await layer.group_add(events.group_name(tenant_id, "a", prefix=True), channel)
            return channel

        channel = async_to_sync(subscribe)()
        events.send_from_sync(tenant_id, "a.b", events.event_message(tenant_id, "a.b", {"x": 1}))
        assert sent == [events.send]
        received = async_to_sync(layer.receive)(channel)
        assert (received["subject"], received["data"]) == ("a.b", {"x": 1})
    finally:
        channel_layers.backends.pop("default", None)


def test_a_forked_child_starts_with_an_empty_queue():
    events._forget_after_fork()  # what os.register_at_fork runs in a child
    assert (events._in_flight, list(events._queue), events._draining) == (0, [], False)
    test_events_handed_over_from_sync_code_arrive_in_order()  # and it publishes as before

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

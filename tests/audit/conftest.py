"""Helpers for the audit tests: entering an organization, reading its events, hearing its events."""

from __future__ import annotations

import asyncio

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from audit.models import AuditEvent
from tenants.events import group_name


def head() -> int:
    """The newest event's sequence in the current schema (0 for an empty log)."""
    last = AuditEvent.objects.order_by("-sequence").values_list("sequence", flat=True).first()
    return last or 0


def events_after(sequence: int) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(sequence__gt=sequence).order_by("sequence"))


@pytest.fixture(autouse=True)
def _generous_export_rate(settings):
    """Rate-limit counters live in Redis across tests: only the rate-limit tests set real ones."""
    settings.AUDIT_EXPORT_RATE = "100000/h"


@pytest.fixture
def acme(org, in_tenant):
    """Run the test inside organization A's schema."""
    with in_tenant(org):
        yield org


@pytest.fixture
def listen():
    """`receive = listen(tenant, subject)`; then `receive()` returns the next message or raises."""
    layer = get_channel_layer()

    def start(tenant, subject: str):
        channel = async_to_sync(layer.new_channel)()
        async_to_sync(layer.group_add)(group_name(str(tenant.public_id), subject), channel)

        def receive(timeout: float = 2.0) -> dict:
            async def get() -> dict:
                return await asyncio.wait_for(layer.receive(channel), timeout)

            return async_to_sync(get)()

        return receive

    return start

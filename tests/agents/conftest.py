"""Helpers for the agents tests: an organization's context, agents made by the real service,
published events heard on the real channel layer, and a config cache that starts empty."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from agents import config_cache, services
from audit.actors import Actor
from audit.models import AuditEvent
from tenants.events import group_name

ROLES = ("viewer", "member", "admin", "owner")


def head() -> int:
    """The newest audit event's sequence in the current schema."""
    last = AuditEvent.objects.order_by("-sequence").values_list("sequence", flat=True).first()
    return last or 0


def events_after(sequence: int) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(sequence__gt=sequence).order_by("sequence"))


def system() -> Actor:
    return Actor.system("tests")


def make_agent(name: str = "Summarizer", **fields: Any):
    """An agent created through the service (in the current organization's context)."""
    data = {"type": "worker", "cpu": "500m", "memory": "512MB", **fields}
    return services.agent_create(actor=system(), name=name, **data)


@pytest.fixture(autouse=True)
def _fresh_config_cache(request):
    """Tests roll their writes back, the Redis cache does not: start every test with a new
    generation for the session organizations and the platform."""
    if "_orgs" in request.fixturenames:  # only tests that use the database
        for org in request.getfixturevalue("_orgs").values():
            config_cache.invalidate(str(org.tenant.public_id))
    config_cache.invalidate(config_cache.PLATFORM)
    yield


@pytest.fixture
def acme(org, in_tenant):
    with in_tenant(org):
        yield org


@pytest.fixture
def listen():
    """`receive = listen(tenant, subject)`; `receive()` returns the next message or times out."""
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

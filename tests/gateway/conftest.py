"""Gateway fixtures: two committed organizations per module, keys, agents, and socket clients.

Consumers reach the database from worker threads, which never see a test's open transaction:
the data they read is committed (real provisioning, deleted afterwards), never `transactional_db`.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from asgiref.testing import ApplicationCommunicator
from channels.layers import channel_layers
from django.test import override_settings

from core.actors import Actor
from tests.conftest import Org, build_org

SYSTEM = Actor.system("tests")


@pytest.fixture(scope="module")
def pair(django_db_setup, django_db_blocker) -> Iterator[tuple[Org, Org]]:
    """Organizations A and B, committed, with a user of every role each."""
    from organizations import services
    from tenants import context
    from tenants.models import Tenant

    with django_db_blocker.unblock():
        built = []
        for letter in "ab":
            slug = f"gw{letter}-{uuid.uuid4().hex[:8]}"
            with context.public_context():
                built.append(build_org(slug, f"Gateway {letter.upper()} {slug}"))
        yield built[0], built[1]
        context.activate(None)
        for org in built:
            if Tenant.objects.filter(pk=org.tenant.pk).exists():
                services.tenant_delete(actor=SYSTEM, tenant=org.tenant)


@pytest.fixture
def unblocked(django_db_blocker):
    with django_db_blocker.unblock():
        yield


@pytest.fixture(params=["redis", "memory"])
def layer(request):
    """Each test runs against the real Redis channel layer and the in-memory one."""
    if request.param == "redis":
        channel_layers.backends.clear()
        yield "redis"
        channel_layers.backends.clear()
        return
    memory = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    with override_settings(CHANNEL_LAYERS=memory):
        channel_layers.backends.clear()
        yield "memory"
    channel_layers.backends.clear()


def free_ports(count: int) -> list[int]:
    """Ports of this suite's range (8350-8399) that nothing listens on right now."""
    import socket

    found = []
    for port in range(8350, 8400):
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        found.append(port)
        if len(found) == count:
            return found
    raise RuntimeError("no free ports in 8350-8399")


def in_org(org: Org, function, *args, **kwargs):
    from tenants import context

    with context.tenant_context(org.tenant):
        return function(*args, **kwargs)


_keys: dict[tuple, str] = {}


def api_key(org: Org, scopes: list[str], *, role: str = "admin") -> str:
    """A key of `org` with `scopes` (one per organization, scopes and role: key creation is
    rate limited per organization)."""
    from credentials import services

    cache_key = (org.tenant.pk, tuple(sorted(scopes)), role)
    if cache_key in _keys:
        return _keys[cache_key]

    def create() -> str:
        user = org.user(role)
        _, raw = services.api_key_create(
            actor=Actor.for_user(user), name=f"gw-{uuid.uuid4().hex[:6]}", scopes=scopes
        )
        return raw

    _keys[cache_key] = in_org(org, create)
    return _keys[cache_key]


def jwt_for(org: Org, role: str = "admin") -> str:
    from credentials import services

    def issue() -> str:
        user = org.user(role)
        return services.token_pair_issue(actor=SYSTEM, user=user).access

    return in_org(org, issue)


def make_agent(org: Org, **fields: Any):
    from agents import services

    data = {"name": f"A {uuid.uuid4().hex[:6]}", "type": "worker", "cpu": "100m", "memory": "64MB"}
    return in_org(org, services.agent_create, actor=SYSTEM, **{**data, **fields})


def make_instance(org: Org, agent):
    from agents import services

    return in_org(org, services.instance_request, actor=SYSTEM, agent_id=agent.pk)


class WebsocketCommunicator(ApplicationCommunicator):
    """Channels' WebsocketCommunicator, minus its package's import of daphne (not a dependency)."""

    def __init__(self, application, path: str, headers: list[tuple[bytes, bytes]]) -> None:
        scope = {
            "type": "websocket",
            "path": path,
            "query_string": b"",
            "headers": headers,
            "subprotocols": [],
        }
        super().__init__(application, scope)

    async def connect(self, timeout: float = 1) -> tuple[bool, Any]:
        await self.send_input({"type": "websocket.connect"})
        response = await self.receive_output(timeout)
        if response["type"] == "websocket.close":
            return False, response.get("code", 1000)
        assert response["type"] == "websocket.accept"
        return True, None

    async def send_to(self, text_data: str) -> None:
        await self.send_input({"type": "websocket.receive", "text": text_data})

    async def receive_from(self, timeout: float = 1) -> str:
        response = await self.receive_output(timeout)
        assert response["type"] == "websocket.send", response
        return response["text"]

    async def disconnect(self, code: int = 1000, timeout: float = 1) -> None:
        await self.send_input({"type": "websocket.disconnect", "code": code})
        await self.wait(timeout)


def host_of(org: Org) -> bytes:
    return org.tenant.host.split(":")[0].encode()


class Client:
    """A WebsocketCommunicator with JSON helpers."""

    def __init__(self, host: bytes, headers: list[tuple[bytes, bytes]] | None = None) -> None:
        from portal.asgi import application

        self.communicator = WebsocketCommunicator(
            application, "/ws/events/", headers=[(b"host", host), *(headers or [])]
        )

    async def connect(self) -> tuple[bool, Any]:
        return await self.communicator.connect(timeout=5)

    async def send(self, **frame: Any) -> None:
        await self.communicator.send_to(text_data=json.dumps(frame))

    async def receive(self, timeout: float = 3) -> dict[str, Any]:
        return json.loads(await self.communicator.receive_from(timeout=timeout))

    async def request(self, **frame: Any) -> dict[str, Any]:
        """Send a frame with a `ref` and return the reply carrying it (events in between are
        kept for `next_event`)."""
        ref = frame.setdefault("ref", uuid.uuid4().hex[:8])
        await self.send(**frame)
        while True:
            reply = await self.receive()
            if reply.get("ref") == ref:
                return reply
            self.pending.append(reply)

    pending: list[dict[str, Any]]

    async def auth(self, token: str) -> dict[str, Any]:
        self.pending = []
        return await self.request(op="auth", token=token)

    async def next_event(self, timeout: float = 3) -> dict[str, Any]:
        if getattr(self, "pending", None):
            return self.pending.pop(0)
        return await self.receive(timeout)

    async def nothing(self, timeout: float = 0.3) -> bool:
        return await self.communicator.receive_nothing(timeout=timeout)

    async def closed_with(self, timeout: float = 3) -> int | None:
        while True:
            output = await self.communicator.receive_output(timeout=timeout)
            if output["type"] == "websocket.close":
                return output.get("code")

    async def close(self) -> None:
        await self.communicator.disconnect()


def run(coroutine_function, *args, **kwargs):
    """Run an async test body from a sync test (database access is unblocked by the caller)."""
    return async_to_sync(coroutine_function)(*args, **kwargs)


async def settle(seconds: float = 0.05) -> None:
    await asyncio.sleep(seconds)

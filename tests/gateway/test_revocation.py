"""Revocation reaches open sockets at once: the organization's control group and its events."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from channels.db import database_sync_to_async

from core.actors import Actor
from tests.gateway.conftest import Client, api_key, host_of, jwt_for, run

pytestmark = pytest.mark.usefixtures("unblocked")
SYSTEM = Actor.system("tests")


@pytest.fixture(autouse=True)
def _no_timer(settings):
    """The periodic re-check cannot be what closes a socket in these tests."""
    settings.GATEWAY_RECHECK_SECONDS = 3600
    settings.API_KEY_CREATE_RATE = "100000/h"


async def opened(org, credential: str) -> Client:
    client = Client(host_of(org))
    await client.connect()
    assert (await client.auth(credential))["op"] == "ready"
    return client


async def closed_at_once(client: Client) -> tuple[str, int, float]:
    """The refusal frame's code, the close code, and how long they took to arrive."""
    started = time.monotonic()
    refused = await client.receive(timeout=2)
    code = await client.closed_with(timeout=2)
    return refused["error"]["code"], code, time.monotonic() - started


async def still_open(client: Client) -> bool:
    return (await client.request(op="ping"))["op"] == "pong"


def _key_row(org, raw: str):
    from credentials import api_keys
    from credentials.models import ApiKey
    from tenants import context

    with context.tenant_context(org.tenant):
        return ApiKey.objects.get(lookup_id=api_keys.parse(raw).lookup_id)


def in_org_sync(org, function, **kwargs):
    from tenants import context

    with context.tenant_context(org.tenant):
        return function(**kwargs)


# --- Each change closes exactly the sockets it should ------------------------------------------


def test_a_revoked_key_closes_its_socket_at_once(scratch_org, pair, layer):
    from credentials import services

    org, (_, other) = scratch_org, pair
    revoked = api_key(org, ["agents:read"])
    kept = api_key(org, ["agents:read", "config:read"])
    elsewhere = api_key(other, ["agents:read"])
    key = _key_row(org, revoked)

    async def body():
        victim, neighbour, stranger = [
            await opened(o, c) for o, c in ((org, revoked), (org, kept), (other, elsewhere))
        ]
        await database_sync_to_async(in_org_sync)(
            org, services.api_key_revoke, actor=Actor.for_user(org.admin), key_id=key.pk
        )
        result = await closed_at_once(victim)
        return result, await still_open(neighbour), await still_open(stranger)

    (code, close, took), neighbour_open, stranger_open = run(body)
    assert (code, close) == ("api_key_revoked", 4401)
    assert took < 1.0
    assert neighbour_open is True
    assert stranger_open is True


def test_a_deactivated_member_loses_their_sockets_and_their_keys_sockets(scratch_org, pair, layer):
    from accounts import services

    org, (_, other) = scratch_org, pair
    admin_token = jwt_for(org, "admin")
    admin_key = api_key(org, ["agents:read"], role="admin")  # created by the admin
    owner_token = jwt_for(org, "owner")
    elsewhere = jwt_for(other, "admin")

    async def body():
        by_token, by_key, owner, stranger = [
            await opened(o, c)
            for o, c in (
                (org, admin_token),
                (org, admin_key),
                (org, owner_token),
                (other, elsewhere),
            )
        ]
        await database_sync_to_async(in_org_sync)(
            org,
            services.member_deactivate,
            actor=Actor.for_user(org.owner),
            user_id=org.admin.pk,
        )
        results = [await closed_at_once(by_token), await closed_at_once(by_key)]
        return results, await still_open(owner), await still_open(stranger)

    results, owner_open, stranger_open = run(body)
    assert [(code, close) for code, close, _ in results] == [
        ("user_inactive", 4401),
        ("api_key_invalid", 4401),
    ]
    assert all(took < 1.0 for _, _, took in results)
    assert owner_open is True
    assert stranger_open is True


def test_a_demoted_member_cannot_publish_from_their_open_socket(scratch_org, pair, layer):
    from accounts import services

    org = scratch_org
    token = jwt_for(org, "member")

    async def body():
        client = await opened(org, token)
        before = await client.request(op="publish", subject="agents.task", data={"n": 0})
        await database_sync_to_async(in_org_sync)(
            org,
            services.member_change_role,
            actor=Actor.for_user(org.owner),
            user_id=org.member.pk,
            role="viewer",
        )
        started = time.monotonic()
        while True:
            reply = await client.request(op="publish", subject="agents.task", data={"n": 1})
            if "error" in reply or time.monotonic() - started > 2:
                break
            await asyncio.sleep(0.05)
        return before, reply, time.monotonic() - started, await still_open(client)

    before, after, took, open_ = run(body)
    assert before["op"] == "ack"
    assert after["error"]["code"] == "permission_denied"
    assert took < 1.0
    assert open_ is True  # a viewer still holds a valid credential: only the rights changed


@pytest.mark.parametrize(
    ("change", "role"), [("tenant_suspend", "owner"), ("tenant_delete", "viewer")]
)
def test_an_unavailable_organization_loses_every_socket_at_once(
    scratch_org, pair, layer, change, role
):
    """Suspended or deleted: every socket of the organization closes; another's stays."""
    from organizations import services

    org, (_, other) = scratch_org, pair
    credentials = [api_key(org, ["agents:read"]), jwt_for(org, role)]
    elsewhere = api_key(other, ["agents:read"])

    async def body():
        sockets = [await opened(org, credential) for credential in credentials]
        stranger = await opened(other, elsewhere)
        service = getattr(services, change)
        extra = {"reason": "tests"} if change == "tenant_suspend" else {}
        await database_sync_to_async(service)(actor=SYSTEM, tenant=org.tenant, **extra)
        results = [await closed_at_once(socket) for socket in sockets]
        return results, await still_open(stranger)

    results, stranger_open = run(body)
    assert [(code, close) for code, close, _ in results] == [("organization_unavailable", 4401)] * 2
    assert all(took < 1.0 for _, _, took in results)
    assert stranger_open is True


# --- The control group is the server's alone ---------------------------------------------------


SUBJECTS = ["control", "agents.control", "a.b.c", "x" * 90, "control.x", "_", "-"]


def test_no_subject_or_pattern_group_is_the_control_group():
    from gateway import subjects
    from tenants import events

    tenant_id = "7d3c5a9e-0000-4000-8000-000000000001"
    control = events.control_group(tenant_id)
    built = {events.group_name(tenant_id, "", prefix=True)}
    for subject in SUBJECTS:
        built |= set(events.groups_for(tenant_id, subject))
        built.add(events.group_name(tenant_id, subject, prefix=True))
    assert control not in built
    for spelling in ["..control", ".control", "control.", "...control", "tenant...control"]:
        with pytest.raises(subjects.InvalidSubject):
            subjects.validate_subject(spelling)
        with pytest.raises(subjects.InvalidSubject):
            subjects.validate_pattern(spelling)
        with pytest.raises(ValueError):
            events.group_name(tenant_id, spelling)


def test_a_client_cannot_reach_or_trigger_the_control_group(pair, layer, monkeypatch):
    from gateway import consumers
    from tenants import events

    a, _ = pair
    key = api_key(a, ["agents:read", "tasks:publish"])
    rechecks: list[str] = []
    lock = threading.Lock()
    original = consumers._recheck

    def counted(host, scope, token):
        with lock:
            rechecks.append(host)
        return original(host, scope, token)

    monkeypatch.setattr(consumers, "_recheck", counted)

    async def body():
        listener = await opened(a, key)
        for pattern in (">", "control", "control.>"):
            assert (await listener.request(op="subscribe", subject=pattern))["op"] == "subscribed"
        publisher = await opened(a, key)
        refused = []
        for subject in ("..control", ".control", "tenant..control", "tenant.x...control"):
            reply = await publisher.request(op="publish", subject=subject, data={})
            refused.append(reply["error"]["code"])
            reply = await publisher.request(op="subscribe", subject=subject)
            refused.append(reply["error"]["code"])
        ack = await publisher.request(
            op="publish", subject="control", data={"type": "tenant.control"}
        )
        delivered = await listener.next_event()
        await asyncio.sleep(0.3)
        after_clients = len(rechecks)
        # The server's own control event: both sockets re-check, neither sees a frame for it.
        await events.send_control(str(a.tenant.public_id), "test")
        deadline = time.monotonic() + 2
        while len(rechecks) < after_clients + 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        quiet = await listener.nothing(timeout=0.3)
        return refused, ack, delivered, after_clients, len(rechecks), quiet, listener, publisher

    refused, ack, delivered, after_clients, total, quiet, *_ = run(body)
    assert set(refused) <= {"subject_invalid", "subject_forbidden"}
    assert len(refused) == 8
    assert ack["op"] == "ack"
    # A client's "control" is an ordinary subject of its namespace, delivered as an event.
    assert (delivered["subject"], delivered["data"]) == ("control", {"type": "tenant.control"})
    assert after_clients == 0
    assert total == 2
    assert quiet is True


def test_a_control_event_reaches_only_its_organization(pair, layer, monkeypatch):
    from gateway import consumers
    from tenants import events

    a, b = pair
    rechecks: list[str] = []
    original = consumers._recheck

    def counted(host, scope, token):
        rechecks.append(host)
        return original(host, scope, token)

    monkeypatch.setattr(consumers, "_recheck", counted)
    keys = api_key(a, ["agents:read"]), api_key(b, ["agents:read"])

    async def body():
        sockets = [await opened(a, keys[0]), await opened(b, keys[1])]
        await events.send_control(str(a.tenant.public_id), "test")
        await asyncio.sleep(0.5)
        return list(rechecks), [await still_open(socket) for socket in sockets]

    rechecked, still = run(body)
    assert rechecked == [host_of(a).decode()]
    assert still == [True, True]


# --- The services announce after commit, once, and only a real change ---------------------------


def announced(org, *changes) -> list[dict]:
    """Run each change (a callable, in a worker thread) and return what reached `org`'s
    control group afterwards, or the exception a change raised in its place."""
    from channels.layers import get_channel_layer

    from tenants import events

    async def body():
        layer = get_channel_layer()
        channel = await layer.new_channel()
        await layer.group_add(events.control_group(str(org.tenant.public_id)), channel)
        outcomes: list = []
        for change in changes:
            try:
                await database_sync_to_async(change)()
            except Exception as error:  # noqa: BLE001 (a refusal is an outcome here)
                outcomes.append(type(error).__name__)
        received = outcomes
        while True:
            try:
                received.append(await asyncio.wait_for(layer.receive(channel), 0.5))
            except TimeoutError:
                return received

    return run(body)


def test_services_announce_a_revoking_change_once_and_a_refused_one_never(scratch_org, layer):
    from accounts import services as accounts
    from credentials import services as credentials

    org = scratch_org
    key = _key_row(org, api_key(org, ["agents:read"]))

    def revoke(user):
        return lambda: in_org_sync(
            org, credentials.api_key_revoke, actor=Actor.for_user(user), key_id=key.pk
        )

    def demote_the_last_owner():
        in_org_sync(
            org, accounts.member_change_role, actor=SYSTEM, user_id=org.owner.pk, role="viewer"
        )

    outcomes = announced(
        org, revoke(org.viewer), demote_the_last_owner, revoke(org.admin), revoke(org.admin)
    )

    # Refused, rolled back, revoked, then revoked again (no change): one announcement.
    assert outcomes == [
        "PermissionDenied",
        "ValidationError",
        {
            "type": "tenant.control",
            "tenant": str(org.tenant.public_id),
            "reason": "api_key.revoked",
        },
    ]


def test_role_changes_and_deactivations_are_announced(scratch_org, layer):
    from accounts import services

    org = scratch_org

    def change(function, **kwargs):
        return lambda: in_org_sync(org, function, actor=Actor.for_user(org.owner), **kwargs)

    outcomes = announced(
        org,
        change(services.member_change_role, user_id=org.member.pk, role="viewer"),
        change(services.member_deactivate, user_id=org.viewer.pk),
    )

    assert [outcome["reason"] for outcome in outcomes] == [
        "member.role_changed",
        "member.deactivated",
    ]


def test_suspension_and_reactivation_are_announced(scratch_org, layer):
    from organizations import services

    org = scratch_org

    outcomes = announced(
        org,
        lambda: services.tenant_suspend(actor=SYSTEM, tenant=org.tenant, reason="tests"),
        lambda: services.tenant_reactivate(actor=SYSTEM, tenant=org.tenant),
    )

    assert [outcome["reason"] for outcome in outcomes] == [
        "organization.suspended",
        "organization.reactivated",
    ]

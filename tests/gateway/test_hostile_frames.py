"""Hostile frames on the WebSocket gateway: each is an error frame and the socket stays open;
refused subjects (trailing newlines, newlines inside, the reserved first token) never reach
Channels' group-name check and never use quota."""

from __future__ import annotations

import pytest

from tests.gateway.conftest import Client, api_key, host_of, run

pytestmark = pytest.mark.usefixtures("unblocked")

DEEP = 10_000  # frames have at most 64 KB
BAD_FRAMES = {
    "deep array": "[" * DEEP + "]" * DEEP,
    "deep object": '{"a":' * (DEEP // 2) + "1" + "}" * (DEEP // 2),
    "deep data": '{"op": "publish", "subject": "q", "data": ' + "[" * 70 + "]" * 70 + "}",
    "lone surrogate": '{"op": "publish", "subject": "q", "data": {"t": "\\ud800"}}',
    "lone surrogate key": '{"op": "publish", "subject": "q", "data": {"\\udc00": 1}}',
    "NaN": '{"op": "publish", "subject": "q", "data": {"n": NaN}}',
    "Infinity": '{"op": "publish", "subject": "q", "data": [Infinity]}',
    "overflow": '{"op": "publish", "subject": "q", "data": {"n": 1e999999}}',
    "huge integer": '{"op": "publish", "subject": "q", "data": ' + "1" * 5000 + "}",
}
BAD_SUBJECTS = [
    "agents\n",
    "tenant\n",
    "tenant\n.x",
    "agents.\nx",
    "agents\n.task",
    "a\nb",
    "agents.task\n",
    "agents.tásk",
    "agents..task",
    "agents\r",
    "\n",
]


def messages_used(org) -> int:
    """The month's messages on the usage ledger (billing), what the quota counts."""
    from tests.billing import helpers

    return helpers.messages_used(org.tenant)


async def still_open(client: Client) -> None:
    assert (await client.request(op="ping"))["op"] == "pong"


def test_bad_json_frames_get_an_error_frame_and_the_socket_stays(pair):
    a, _ = pair
    key = api_key(a, ["agents:read", "tasks:publish"])
    used = messages_used(a)

    async def body():
        client = Client(host_of(a))
        await client.connect()
        await client.auth(key)
        for name, frame in BAD_FRAMES.items():
            await client.communicator.send_to(text_data=frame)
            reply = await client.receive()
            assert reply["error"]["code"] == "parse_error", name
            await still_open(client)
        await client.close()

    run(body)
    assert messages_used(a) == used


def test_bad_json_before_auth_keeps_the_socket(pair):
    a, _ = pair

    async def body():
        client = Client(host_of(a))
        await client.connect()
        await client.communicator.send_to(text_data="[" * DEEP + "]" * DEEP)
        assert (await client.receive())["error"]["code"] == "parse_error"
        await client.communicator.send_to(text_data='{"op": "auth", "token": NaN}')
        assert (await client.receive())["error"]["code"] == "parse_error"
        reply = await client.auth(api_key(a, ["agents:read", "tasks:publish"]))
        assert reply["op"] == "ready"
        await client.close()

    run(body)


def test_data_nested_past_the_value_limit_is_refused_without_quota(pair):
    a, _ = pair
    key = api_key(a, ["agents:read", "tasks:publish"])
    used = messages_used(a)
    data: dict = {}
    for _ in range(33):
        data = {"a": data}

    async def body():
        client = Client(host_of(a))
        await client.connect()
        await client.auth(key)
        reply = await client.request(op="publish", subject="q", data=data)
        assert reply["error"]["code"] == "invalid"
        await still_open(client)
        await client.close()

    run(body)
    assert messages_used(a) == used


@pytest.mark.parametrize("subject", BAD_SUBJECTS)
def test_subjects_with_newlines_are_refused_before_quota(pair, subject):
    a, _ = pair
    key = api_key(a, ["agents:read", "tasks:publish"])
    used = messages_used(a)

    async def body():
        client = Client(host_of(a))
        await client.connect()
        await client.auth(key)
        for op in ("subscribe", "publish"):
            reply = await client.request(op=op, subject=subject, data={})
            assert reply["error"]["code"] in {"subject_invalid", "subject_forbidden"}, (op, reply)
            await still_open(client)
        await client.close()

    run(body)
    assert messages_used(a) == used


def test_subject_patterns_full_match():
    from gateway import subjects
    from tenants import events

    for bad in BAD_SUBJECTS:
        with pytest.raises(subjects.InvalidSubject):
            subjects.validate_subject(bad)
        with pytest.raises(subjects.InvalidSubject):
            subjects.validate_pattern(bad)
        with pytest.raises(ValueError):
            events.group_name("t", bad)
    with pytest.raises(subjects.InvalidSubject, match="namespace"):
        subjects.validate_pattern("TENANT.>")
    assert subjects.validate_pattern("agents.*.metrics") == "agents.*.metrics"
    assert subjects.validate_subject("agents.task") == "agents.task"


def test_bad_tokens_on_sockets_are_throttled_and_aggregated(pair, settings):
    from audit.models import AuditEvent
    from tenants import context

    settings.AUTH_FAILURE_RATE_PER_IP = "3/m"
    a, _ = pair
    with context.tenant_context(a.tenant):
        before = AuditEvent.objects.filter(action="auth.failed").count()

    async def attempt() -> str:
        client = Client(host_of(a))
        await client.connect()
        reply = await client.auth("agp_" + "B" * 50)
        assert await client.closed_with() == 4401
        return reply["error"]["code"]

    async def body():
        return [await attempt() for _ in range(5)]

    assert run(body) == ["api_key_invalid"] * 3 + ["rate_limited"] * 2
    with context.tenant_context(a.tenant):
        assert AuditEvent.objects.filter(action="auth.failed").count() == before + 1

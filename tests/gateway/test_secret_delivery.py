"""Secrets over the gateway: an attached runtime receives the values its agent references, and
only those; each delivery is audited without the values; other organizations get nothing."""

from __future__ import annotations

import json
import uuid

import pytest

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
RUNTIME = ["agents:read", "agents:write", "secrets:use"]
SYSTEM_LABEL = "tests"


def set_secret(org, name: str, value: str) -> None:
    from core.actors import Actor
    from vault import services

    in_org(org, services.secret_set, actor=Actor.system(SYSTEM_LABEL), name=name, value=value)


def attach(org, key: str, instance_id) -> dict:
    async def body():
        client = Client(host_of(org))
        await client.connect()
        await client.auth(key)
        reply = await client.request(op="attach", instance=str(instance_id))
        config = await client.request(op="config")
        await client.close()
        return reply, config

    return run(body)


def deliveries(org) -> list:
    from audit.models import AuditEvent

    return in_org(
        org, lambda: list(AuditEvent.objects.filter(action="secret.delivered").order_by("sequence"))
    )


def test_the_attach_reply_carries_only_the_referenced_secrets(pair):
    a, _ = pair
    suffix = uuid.uuid4().hex[:6].upper()
    used, unused = f"USED_{suffix}", f"UNUSED_{suffix}"
    set_secret(a, used, "value-of-the-used-secret")
    set_secret(a, unused, "value-nobody-asked-for")
    agent = make_agent(a, secrets=[used])
    instance = make_instance(a, agent)
    before = len(deliveries(a))

    reply, config = attach(a, api_key(a, RUNTIME), instance.pk)

    assert reply["op"] == "attached"
    assert reply["secrets"] == {used: "value-of-the-used-secret"}
    assert reply["missing_secrets"] == []
    assert "value-of-the-used-secret" not in json.dumps(config)  # only the attach reply
    events = deliveries(a)[before:]
    assert len(events) == 1
    assert events[0].details == {"agent": str(agent.pk), "names": [used], "missing": []}
    assert events[0].resource_id == str(instance.pk)
    assert "value-of" not in json.dumps(events[0].details)


def test_without_secrets_use_the_attach_is_refused_and_nothing_changes(pair):
    a, _ = pair
    name = f"GUARDED_{uuid.uuid4().hex[:6].upper()}"
    set_secret(a, name, "guarded-value-123456")
    instance = make_instance(a, make_agent(a, secrets=[name]))

    reply, _ = attach(a, api_key(a, ["agents:read", "agents:write"]), instance.pk)

    assert reply["error"]["code"] == "permission_denied"
    assert "guarded-value" not in json.dumps(reply)
    from agents.models import AgentInstance

    assert in_org(a, lambda: AgentInstance.objects.get(pk=instance.pk).status) == "pending"
    refusal = deliveries(a)[-1]
    assert (refusal.result, refusal.resource_id) == ("denied", str(instance.pk))


def test_a_member_cannot_hold_secrets_use():
    from core.roles import permissions_for

    assert "secrets:use" not in permissions_for("member")
    assert "secrets:use" in permissions_for("admin")


def test_a_deleted_secret_is_reported_missing(pair):
    from core.actors import Actor
    from vault import services
    from vault.models import Secret

    a, _ = pair
    name = f"GONE_{uuid.uuid4().hex[:6].upper()}"
    set_secret(a, name, "soon-gone-value-1234")
    instance = make_instance(a, make_agent(a, secrets=[name]))
    secret = in_org(a, lambda: Secret.objects.get(name=name))
    in_org(a, services.secret_delete, actor=Actor.system("tests"), secret_id=secret.pk)

    reply, _ = attach(a, api_key(a, RUNTIME), instance.pk)

    assert (reply["secrets"], reply["missing_secrets"]) == ({}, [name])


def test_another_organizations_runtime_gets_nothing(pair):
    a, b = pair
    name = f"A_ONLY_{uuid.uuid4().hex[:6].upper()}"
    set_secret(a, name, "a-only-secret-value-1")
    instance = make_instance(a, make_agent(a, secrets=[name]))

    reply, _ = attach(b, api_key(b, RUNTIME), instance.pk)

    assert reply["error"]["code"] == "not_found"
    assert "a-only" not in json.dumps(reply)
    from agents.models import AgentInstance

    assert in_org(a, lambda: AgentInstance.objects.get(pk=instance.pk).status) == "pending"


def test_an_agent_can_only_reference_existing_secrets(pair):
    from django.core.exceptions import ValidationError

    a, b = pair
    name = f"B_ONLY_{uuid.uuid4().hex[:6].upper()}"
    set_secret(b, name, "b-secret-value-12345")

    with pytest.raises(ValidationError) as raised:
        make_agent(a, secrets=[name])

    assert raised.value.message_dict["secrets"] == [f"No such secret: {name}."]

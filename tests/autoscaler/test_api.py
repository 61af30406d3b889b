"""`/api/v1/agents/{id}/scaling/`: the policy, state and decisions; roles, other tenants, input."""

from __future__ import annotations

import uuid

import pytest

from autoscaler import services
from autoscaler.models import ScalingPolicy
from core.actors import Actor
from tests.agents.conftest import make_agent, system
from tests.agents.test_api import bearer_client, error, send
from tests.audit.conftest import events_after, head
from tests.autoscaler.conftest import POLICY, running_agent

AUTOSCALER = Actor.system("autoscaler")


def policies() -> list[tuple]:
    return sorted(ScalingPolicy.objects.values_list("agent_id", "is_enabled", "max_instances"))


def test_get_shows_the_defaults_until_a_policy_is_set(org, client_for, in_tenant):
    with in_tenant(org):
        agent = make_agent("Plain")
    body = client_for(org, org.viewer).get(f"/api/v1/agents/{agent.pk}/scaling/").json()
    assert body == {
        "agent_id": str(agent.pk),
        "policy": {
            **POLICY,
            "is_enabled": False,
            "updated_at": None,
            "updated_by": "",
        },
        "state": {
            "instances": 0,
            "pending": 0,
            "direction": "hold",
            "target": 0,
            "reason": "Autoscaling is off.",
            "cooldown_until": None,
        },
        "decisions": [],
    }


def test_get_shows_the_state_and_the_last_decisions(
    org, client_for, in_tenant, django_assert_num_queries
):
    with in_tenant(org):
        agent, _ = running_agent("Hot", instances=2, cpu=[90, 90, 90])
        decision = services.agent_autoscale(actor=AUTOSCALER, agent=agent)
    client = client_for(org, org.member)
    client.get(f"/api/v1/agents/{agent.pk}/scaling/")

    # session, user, agent, policy, instances, minutes, last decision, decisions
    with django_assert_num_queries(8):
        body = client.get(f"/api/v1/agents/{agent.pk}/scaling/").json()

    assert body["state"] == {
        "instances": 3,
        "pending": 1,
        "direction": "hold",
        "target": 3,
        "reason": body["state"]["reason"],
        "cooldown_until": body["state"]["cooldown_until"],
    }
    assert body["state"]["reason"].startswith(("Waiting for metrics", "Cooling down"))
    assert body["decisions"] == [
        {
            "decided_at": decision.decided_at.isoformat().replace("+00:00", "Z"),
            "direction": "up",
            "from_count": 2,
            "wanted_count": 3,
            "to_count": 3,
            "reason": "CPU 90% or more (≥ 75) for 3 min",
            "outcome": "Scaled up to 3.",
            "metrics": {"cpu": [90.0, 90.0, 90.0], "queue": [0.0, 0.0, 0.0]},
        }
    ]


def test_an_admin_replaces_the_policy(org, client_for, in_tenant):
    with in_tenant(org):
        agent = make_agent("Tuned")
    wanted = {**POLICY, "max_instances": 9, "memory_up": 80, "memory_down": 20}

    response = send(
        client_for(org, org.admin), "put", f"/api/v1/agents/{agent.pk}/scaling/", wanted
    )

    assert response.status_code == 200
    policy = response.json()["policy"]
    assert {name: policy[name] for name in wanted} == {**wanted, "memory_up": 80.0}
    assert policy["updated_by"] == "admin@acme.test"
    with in_tenant(org):
        assert policies() == [(agent.pk, True, 9)]


def test_a_bearer_token_works_too(org, client_for, in_tenant):
    with in_tenant(org):
        agent = make_agent("Tuned")
    client, headers = bearer_client(org, org.owner, client_for)
    response = send(client, "put", f"/api/v1/agents/{agent.pk}/scaling/", POLICY, **headers)
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("role", "method", "status"),
    [
        ("anonymous", "GET", 401),
        ("viewer", "GET", 200),
        ("member", "GET", 200),
        ("admin", "GET", 200),
        ("owner", "GET", 200),
        ("anonymous", "PUT", 401),
        ("viewer", "PUT", 403),
        ("member", "PUT", 403),
        ("admin", "PUT", 200),
        ("owner", "PUT", 200),
    ],
)
def test_role_matrix(
    org, client_for, in_tenant, django_capture_on_commit_callbacks, role, method, status
):
    with in_tenant(org):
        agent = make_agent("Matrix")
        before, start = policies(), head()
    client = client_for(org, None if role == "anonymous" else org.user(role))

    with django_capture_on_commit_callbacks() as callbacks:
        response = send(
            client,
            method.lower(),
            f"/api/v1/agents/{agent.pk}/scaling/",
            {**POLICY, "max_instances": 7} if method == "PUT" else None,
        )

    assert response.status_code == status
    if status in (401, 403):
        assert error(response)[0] == ("not_authenticated" if status == 401 else "permission_denied")
        assert callbacks == []
        with in_tenant(org):
            assert policies() == before
            assert events_after(start) == []


def test_another_organization_gets_404_and_changes_nothing(org, other_org, client_for, in_tenant):
    with in_tenant(org):
        agent = make_agent("Acme only")
        services.policy_set(actor=system(), agent_id=agent.pk, **POLICY)
        before = policies()
    intruder = client_for(other_org, other_org.owner)

    for method, body in (("get", None), ("put", {**POLICY, "max_instances": 2})):
        response = send(intruder, method, f"/api/v1/agents/{agent.pk}/scaling/", body)
        assert response.status_code == 404 and error(response)[0] == "not_found"
    missing = send(intruder, "put", f"/api/v1/agents/{uuid.uuid4()}/scaling/", POLICY)
    assert missing.status_code == 404
    with in_tenant(org):
        assert policies() == before
    with in_tenant(other_org):
        assert policies() == []


INVALID = (400, "invalid")
# Rules between fields, which the OpenAPI document cannot state: 422 (core.errors).
UNPROCESSABLE = (422, "unprocessable")


@pytest.mark.parametrize(
    ("body", "field", "refusal"),
    [
        ({**POLICY, "min_instances": 0}, "min_instances", INVALID),
        ({**POLICY, "max_instances": 101}, "max_instances", INVALID),
        ({**POLICY, "min_instances": 3, "max_instances": 2}, "max_instances", UNPROCESSABLE),
        ({**POLICY, "window_minutes": "soon"}, "window_minutes", INVALID),
        ({**POLICY, "cpu_up": -1}, "cpu_up", INVALID),
        ({**POLICY, "cpu_down": 90}, "cpu_down", UNPROCESSABLE),
        ({**POLICY, "queue_down": None}, "queue_down", UNPROCESSABLE),
        ({**POLICY, "tenant": "globex"}, "tenant", INVALID),
        ({k: v for k, v in POLICY.items() if k != "is_enabled"}, "is_enabled", INVALID),
    ],
)
def test_bad_input_is_refused_naming_the_field_and_changes_nothing(
    org, client_for, in_tenant, body, field, refusal
):
    with in_tenant(org):
        agent = make_agent("Tuned")
    response = send(client_for(org, org.admin), "put", f"/api/v1/agents/{agent.pk}/scaling/", body)
    code, detail = error(response)
    assert (response.status_code, code) == refusal and field in detail
    with in_tenant(org):
        assert policies() == []


def test_a_body_that_is_not_json_is_refused(org, client_for, in_tenant):
    with in_tenant(org):
        agent = make_agent("Tuned")
    client = client_for(org, org.admin)
    path = f"/api/v1/agents/{agent.pk}/scaling/"
    assert client.put(path, data="x=1", content_type="text/plain").status_code == 415
    assert client.put(path, data="{", content_type="application/json").status_code == 400


def test_the_endpoint_is_documented_with_its_constraints(org, client_for):
    from tests.portal.test_openapi import _schema

    schema = _schema(client_for(org))
    item = schema["paths"]["/api/v1/agents/{agent_id}/scaling/"]
    assert item["get"]["x-required-permission"] == "agents:read"
    assert item["put"]["x-required-permission"] == "config:write"
    fields = schema["components"]["schemas"]["ScalingPolicyInputRequest"]["properties"]
    assert (fields["max_instances"]["minimum"], fields["max_instances"]["maximum"]) == (1, 100)
    assert (fields["window_minutes"]["minimum"], fields["window_minutes"]["maximum"]) == (1, 30)
    assert fields["cpu_up"]["nullable"] is True and fields["cpu_up"]["minimum"] == 0
    assert set(schema["components"]["schemas"]["ScalingPolicyInputRequest"]["required"]) == set(
        POLICY
    )

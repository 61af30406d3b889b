"""The agents API: CRUD, instances, quota, config; errors, roles, credentials, other tenants."""

from __future__ import annotations

import json
import uuid

import pytest

from agents import services
from agents.models import Agent, AgentInstance, ConfigKey, ResourcePool
from core.actors import Actor
from tenants import context
from tests.agents.conftest import make_agent, system

AGENT = {
    "name": "Api agent",
    "type": "worker",
    "description": "Made over the API.",
    "cpu": "0.25",
    "memory": "512MB",
    "permissions": ["messages:read"],
    "tools": ["search"],
    "config": {"model": "small"},
}


@pytest.fixture(autouse=True)
def _api_settings(settings):
    """Rate-limit counters live in Redis across tests; signing keys in this process's keyring."""
    from credentials import keyring

    settings.API_KEY_CREATE_RATE = "100000/h"
    keyring.forget()
    yield
    keyring.forget()


def send(client, method: str, path: str, data=None, **extra):
    if data is None:
        return getattr(client, method)(path, **extra)
    return getattr(client, method)(
        path, data=json.dumps(data), content_type="application/json", **extra
    )


def error(response) -> tuple[str, object]:
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "detail"}
    return body["error"]["code"], body["error"]["detail"]


def bearer_client(org, user, client_for):
    from credentials import services as credentials

    with context.tenant_context(org.tenant):
        pair = credentials.token_pair_issue(actor=Actor.for_user(user), user=user)
    return client_for(org), {"HTTP_AUTHORIZATION": f"Bearer {pair.access}"}


def key_client(org, scopes, client_for):
    from credentials import services as credentials

    with context.tenant_context(org.tenant):
        _, raw = credentials.api_key_create(
            actor=Actor.for_user(org.admin), name="agents test", scopes=scopes
        )
    return client_for(org), {"HTTP_AUTHORIZATION": f"Api-Key {raw}"}


# --- Agents ----------------------------------------------------------------------------------


def test_create_read_update_and_delete_an_agent(org, client_for, in_tenant):
    client = client_for(org, org.member)

    created = send(client, "post", "/api/v1/agents/", AGENT)
    agent_id = created.json()["id"]
    read = send(client, "get", f"/api/v1/agents/{agent_id}/")
    patched = send(client, "patch", f"/api/v1/agents/{agent_id}/", {"cpu": "1", "tools": []})
    replaced = send(
        client,
        "put",
        f"/api/v1/agents/{agent_id}/",
        {"name": "Replaced", "type": "router", "cpu": "2", "memory": "1Gi"},
    )
    deleted = send(client, "delete", f"/api/v1/agents/{agent_id}/")
    gone = send(client, "get", f"/api/v1/agents/{agent_id}/")

    assert created.status_code == 201
    assert {
        k: v for k, v in created.json().items() if k not in {"id", "created_at", "updated_at"}
    } == {
        "name": "Api agent",
        "type": "worker",
        "description": "Made over the API.",
        "status": "idle",
        "active_instances": 0,
        "cpu": "250m",
        "cpu_millicores": 250,
        "memory": "512MB",
        "memory_mb": 512,
        "permissions": ["messages:read"],
        "granted_permissions": ["messages:read"],
        "tools": ["search"],
        "secrets": [],
        "config": {"model": "small"},
        "created_by": org.member.email,
    }
    assert read.status_code == 200 and read.json() == created.json()
    assert (patched.json()["cpu"], patched.json()["tools"], patched.json()["name"]) == (
        "1",
        [],
        "Api agent",
    )
    assert replaced.status_code == 200
    assert {
        k: replaced.json()[k] for k in ("name", "type", "cpu", "memory", "config", "permissions")
    } == {
        "name": "Replaced",
        "type": "router",
        "cpu": "2",
        "memory": "1GB",
        "config": {},  # PUT replaces: what is left out goes back to its default
        "permissions": [],
    }
    assert deleted.status_code == 204
    assert gone.status_code == 404 and error(gone)[0] == "not_found"


def test_bad_input_is_a_400_naming_every_field_and_changes_nothing(org, client_for, in_tenant):
    with in_tenant(org):
        before = Agent.objects.count()

    response = send(
        client_for(org, org.member),
        "post",
        "/api/v1/agents/",
        {**AGENT, "cpu": "-1", "memory": "2TB", "permissions": ["agents:spawn"], "config": [1]},
    )

    assert response.status_code == 400
    code, detail = error(response)
    assert code == "invalid"
    assert set(detail) == {"cpu", "memory", "config"}  # the form first; the plan after
    with in_tenant(org):
        assert Agent.objects.count() == before


def test_well_formed_input_against_the_plan_or_the_organization_is_a_409(
    org, client_for, in_tenant
):
    with in_tenant(org):
        before = Agent.objects.count()
    client = client_for(org, org.member)

    refused = send(
        client,
        "post",
        "/api/v1/agents/",
        {**AGENT, "cpu": "999", "permissions": ["agents:spawn"], "secrets": ["NOPE"]},
    )

    assert refused.status_code == 409
    code, detail = error(refused)
    assert code == "conflict"
    assert detail["permissions"] == ["Not allowed by your plan: agents:spawn."]
    assert set(detail) == {"cpu", "permissions", "secrets"}
    with in_tenant(org):
        assert Agent.objects.count() == before


@pytest.mark.parametrize(
    "extra",
    [{"id": str(uuid.uuid4())}, {"tenant": "globex"}, {"cpu_millicores": 1}, {"created_by": "x"}],
)
def test_fields_a_client_may_not_set_are_refused(org, client_for, in_tenant, extra):
    response = send(client_for(org, org.member), "post", "/api/v1/agents/", {**AGENT, **extra})

    assert response.status_code == 400
    assert error(response)[1] == {next(iter(extra)): ["Unknown field."]}
    with in_tenant(org):
        assert not Agent.objects.filter(name=AGENT["name"]).exists()


def test_put_requires_the_required_fields(org, client_for, in_tenant):
    with in_tenant(org):
        agent = make_agent("Putter")

    response = send(
        client_for(org, org.member), "put", f"/api/v1/agents/{agent.pk}/", {"name": "x"}
    )

    assert response.status_code == 400
    assert set(error(response)[1]) == {"type", "cpu", "memory"}


def test_the_list_filters_searches_and_pages(org, client_for, in_tenant):
    with in_tenant(org):
        for number in range(7):
            make_agent(f"Paged {number}", type="router" if number < 3 else "worker")
        busy = make_agent("Paged busy", type="assistant")
        services.instance_request(actor=system(), agent_id=busy.pk)
    client = client_for(org, org.viewer)

    page = send(client, "get", "/api/v1/agents/?search=paged&page_size=3&page=2").json()
    routers = send(client, "get", "/api/v1/agents/?type=router").json()
    pending = send(client, "get", "/api/v1/agents/?status=pending&search=paged").json()
    bad = send(client, "get", "/api/v1/agents/?status=exploded")

    assert page["count"] == 8 and len(page["results"]) == 3
    assert [a["name"] for a in page["results"]] == ["Paged 3", "Paged 4", "Paged 5"]
    assert page["next"].endswith("page=3&page_size=3&search=paged")
    assert {a["type"] for a in routers["results"]} == {"router"} and routers["count"] == 3
    assert [(a["name"], a["status"], a["active_instances"]) for a in pending["results"]] == [
        ("Paged busy", "pending", 1)
    ]
    assert bad.status_code == 400 and "status" in error(bad)[1]


def test_the_list_runs_a_fixed_number_of_queries(
    org, client_for, in_tenant, django_assert_num_queries
):
    client = client_for(org, org.viewer)

    def listed() -> int:
        return len(send(client, "get", "/api/v1/agents/").json()["results"])

    with in_tenant(org):
        for number in range(3):
            agent = make_agent(f"Fixed {number}")
            services.instance_request(actor=system(), agent_id=agent.pk)
    listed()  # a session's first request also notes its start in the session (one write)
    listed()  # the same connection state before each measured request

    # Session, user, page. The page holds the whole list, so it gives the count (no COUNT); the
    # limits come from the routing cache (no switch to `public`).
    with django_assert_num_queries(3):
        assert listed() == 3
    with in_tenant(org):
        for number in range(12):
            make_agent(f"Fixed more {number}")
    listed()
    with django_assert_num_queries(3):
        assert listed() == 15
    # A page with more after it counts them: one more query.
    with django_assert_num_queries(4):
        body = send(client, "get", "/api/v1/agents/?page_size=10").json()
    assert body["count"] == 15 and len(body["results"]) == 10 and body["next"]
    with django_assert_num_queries(3):
        body = send(client, "get", "/api/v1/agents/?page_size=10&page=2").json()
    assert body["count"] == 15 and len(body["results"]) == 5 and body["next"] is None
    assert send(client, "get", "/api/v1/agents/?page_size=10&page=3").status_code == 404


# --- Instances -------------------------------------------------------------------------------


def test_request_list_and_stop_instances(org, client_for, in_tenant):
    with in_tenant(org):
        agent = make_agent("Instanced", cpu="500m", memory="256MB")
        before = ResourcePool.objects.get(pk=1).cpu_millicores
    client = client_for(org, org.member)
    base = f"/api/v1/agents/{agent.pk}/instances/"

    first = send(client, "post", base)
    second = send(client, "post", base)
    listed = send(client, "get", base).json()
    stopped = send(client, "post", f"{base}{first.json()['id']}/stop/")
    one = send(client, "get", f"{base}{first.json()['id']}/")
    pending = send(client, "get", f"{base}?status=pending").json()

    assert (first.status_code, second.status_code) == (201, 201)
    assert first.json()["status"] == "pending"
    assert first.json()["namespace"] == f"tenant.{org.tenant.public_id}.agents.{agent.pk}"
    assert (first.json()["cpu"], first.json()["memory"]) == ("500m", "256MB")
    assert listed["count"] == 2
    assert stopped.status_code == 200 and stopped.json()["status"] == "stopped"
    assert one.json()["stopped_at"] is not None
    assert [i["id"] for i in pending["results"]] == [second.json()["id"]]
    with in_tenant(org):
        assert ResourcePool.objects.get(pk=1).cpu_millicores == before + 500


@pytest.mark.parametrize(
    ("overrides", "code", "limit"),
    [
        ({"max_instances": 0}, "instance_limit_reached", "max_instances"),
        ({"max_cpu_millicores": 100}, "insufficient_cpu", "max_cpu_millicores"),
        ({"max_memory_mb": 100}, "insufficient_memory", "max_memory_mb"),
        ({"max_agents": 0}, "agent_limit_reached", "max_agents"),
    ],
)
def test_a_full_pool_is_a_409_naming_the_limit(org, client_for, in_tenant, overrides, code, limit):
    with in_tenant(org):
        agent = make_agent("Refused")
    services.organization_limits_set(actor=system(), tenant=org.tenant, overrides=overrides)

    response = send(client_for(org, org.member), "post", f"/api/v1/agents/{agent.pk}/instances/")

    assert response.status_code == 409
    assert error(response)[0] == code
    assert error(response)[1]["limit"] == limit
    with in_tenant(org):
        assert not AgentInstance.objects.filter(agent=agent).exists()


def test_creating_past_the_agent_limit_is_a_409(org, client_for, in_tenant):
    with in_tenant(org):
        in_use = ResourcePool.objects.get(pk=1).agents
    services.organization_limits_set(
        actor=system(), tenant=org.tenant, overrides={"max_agents": in_use}
    )

    response = send(client_for(org, org.member), "post", "/api/v1/agents/", AGENT)

    assert response.status_code == 409
    assert error(response) == (
        "agent_limit_reached",
        {"limit": "max_agents", "allowed": in_use, "in_use": in_use},
    )


# --- Quota -----------------------------------------------------------------------------------


def test_quota_shows_limits_and_usage(org, client_for, in_tenant):
    with in_tenant(org):
        agent = make_agent("Counted", cpu="1", memory="1GB")
        services.instance_request(actor=system(), agent_id=agent.pk)
        pool = ResourcePool.objects.get(pk=1)
    services.organization_limits_set(actor=system(), tenant=org.tenant, overrides={"max_agents": 9})

    body = send(client_for(org, org.viewer), "get", "/api/v1/quota/").json()

    assert body == {
        "agents": {"used": pool.agents, "limit": 9},
        "instances": {"used": pool.instances, "limit": 50},
        "cpu_millicores": {"used": pool.cpu_millicores, "limit": 32000},
        "memory_mb": {"used": pool.memory_mb, "limit": 65536},
        "messages_this_month": {"used": 0, "limit": 5_000_000},
        "per_instance": {"cpu_millicores": 4000, "memory_mb": 16384},
        "allowed_agent_permissions": [
            "config:read",
            "http:outbound",
            "messages:publish",
            "messages:read",
            "tasks:publish",
            "tasks:receive",
            "tools:invoke",
        ],
        "overridden": ["max_agents"],
    }


# --- Config ----------------------------------------------------------------------------------


def test_set_read_list_resolve_and_delete_config(org, client_for, in_tenant):
    admin = client_for(org, org.admin)
    services.platform_config_default_set(
        actor=system(), key="agents.defaults", value={"model": "small", "limits": {"rpm": 60}}
    )

    put = send(admin, "put", "/api/v1/config/agents.worker/", {"value": {"limits": {"rpm": 120}}})
    got = send(admin, "get", "/api/v1/config/agents.worker/")
    listed = send(client_for(org, org.viewer), "get", "/api/v1/config/").json()
    resolved = send(client_for(org, org.viewer), "get", "/api/v1/config/agents/worker/")
    deleted = send(admin, "delete", "/api/v1/config/agents.worker/")

    assert put.status_code == 200 and put.json()["value"] == {"limits": {"rpm": 120}}
    assert got.json()["version"] == put.json()["version"]
    assert [entry["key"] for entry in listed["results"]] == ["agents.worker"]
    assert resolved.json() == {
        "type": "worker",
        "config": {"model": "small", "limits": {"rpm": 120}},
        "provenance": [
            {"pointer": "/model", "value": "small", "source": "platform", "key": "agents.defaults"},
            {
                "pointer": "/limits/rpm",
                "value": 120,
                "source": "organization",
                "key": "agents.worker",
            },
        ],
        "layers": ["platform:agents.defaults", "organization:agents.worker"],
    }
    assert deleted.status_code == 204
    with in_tenant(org):
        assert not ConfigKey.objects.filter(key="agents.worker").exists()


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/api/v1/config/agents.worker/", {"value": [1]}, "value"),
        ("/api/v1/config/Bad.Key/", {"value": 1}, "key"),
        ("/api/v1/config/agents.worker/", {"value": "x" * 70_000}, "value"),
        ("/api/v1/config/agents.worker/", {}, "value"),
        ("/api/v1/config/agents.worker/", {"value": {}, "version": 9}, "version"),
    ],
)
def test_bad_config_is_a_400(org, client_for, in_tenant, path, body, field):
    response = send(client_for(org, org.admin), "put", path, body)

    assert response.status_code == 400 and field in error(response)[1]
    with in_tenant(org):
        assert ConfigKey.objects.count() == 0


def test_a_bad_type_is_a_400_and_an_unknown_key_a_404(org, client_for):
    client = client_for(org, org.viewer)

    assert send(client, "get", "/api/v1/config/agents/Not_A_Type/").status_code == 400
    assert send(client, "get", "/api/v1/config/nothing.here/").status_code == 404


# --- Credentials, roles and other organizations ---------------------------------------------


def test_a_bearer_token_and_a_scoped_api_key_work_and_scopes_are_enforced(
    org, client_for, in_tenant
):
    with in_tenant(org):
        agent = make_agent("Scoped")
    jwt_client, jwt = bearer_client(org, org.member, client_for)
    reader, read_key = key_client(org, ["agents:read"], client_for)
    writer, write_key = key_client(org, ["agents:read", "agents:write"], client_for)

    assert (
        send(jwt_client, "post", f"/api/v1/agents/{agent.pk}/instances/", **jwt).status_code == 201
    )
    assert send(reader, "get", "/api/v1/agents/", **read_key).status_code == 200
    refused = send(reader, "post", f"/api/v1/agents/{agent.pk}/instances/", **read_key)
    assert refused.status_code == 403 and error(refused)[0] == "permission_denied"
    started = send(writer, "post", f"/api/v1/agents/{agent.pk}/instances/", **write_key)
    assert started.status_code == 201
    assert (
        started.json()["requested_by"]
        == "agents test (" + started.json()["requested_by"].split("(")[1]
    )


# Every endpoint as (method, path); `{agent}` and `{instance}` are filled in per test.
API_ENDPOINTS = [
    ("GET", "/api/v1/agents/"),
    ("GET", "/api/v1/agents/{agent}/"),
    ("GET", "/api/v1/agents/{agent}/instances/"),
    ("GET", "/api/v1/agents/{agent}/instances/{instance}/"),
    ("GET", "/api/v1/quota/"),
    ("GET", "/api/v1/config/"),
    ("GET", "/api/v1/config/agents/worker/"),
    ("POST", "/api/v1/agents/"),
    ("PATCH", "/api/v1/agents/{agent}/"),
    ("POST", "/api/v1/agents/{agent}/instances/"),
    ("POST", "/api/v1/agents/{agent}/instances/{instance}/stop/"),
    ("PUT", "/api/v1/config/feature.flag/"),
    ("DELETE", "/api/v1/agents/{agent}/"),
]
API_BODIES = {
    ("POST", "/api/v1/agents/"): {**AGENT, "name": "Matrix"},
    ("PATCH", "/api/v1/agents/{agent}/"): {"description": "changed"},
    ("PUT", "/api/v1/config/feature.flag/"): {"value": True},
}


def api_calls(agent, instance):
    """(method, path, body) of every endpoint, for this agent and instance."""
    return [
        (
            method,
            path.format(agent=agent.pk, instance=instance.pk),
            API_BODIES.get((method, path)),
        )
        for method, path in API_ENDPOINTS
    ]


def agents_state():
    """What the agents API writes in the organization's schema."""
    return (
        sorted(Agent.objects.values_list("id", "name", "description")),
        sorted(AgentInstance.objects.values_list("id", "status")),
        list(ResourcePool.objects.values_list("agents", "instances", "cpu_millicores")),
        sorted(ConfigKey.objects.values_list("key", "version")),
    )


@pytest.mark.parametrize(
    ("role", "method", "path", "status"),
    [
        # Reads: every role of the organization; agents:read / config:read.
        ("anonymous", "GET", "/api/v1/agents/", 401),
        ("viewer", "GET", "/api/v1/agents/", 200),
        ("member", "GET", "/api/v1/agents/", 200),
        ("admin", "GET", "/api/v1/agents/", 200),
        ("owner", "GET", "/api/v1/agents/", 200),
        ("anonymous", "GET", "/api/v1/agents/{agent}/", 401),
        ("viewer", "GET", "/api/v1/agents/{agent}/", 200),
        ("member", "GET", "/api/v1/agents/{agent}/", 200),
        ("admin", "GET", "/api/v1/agents/{agent}/", 200),
        ("owner", "GET", "/api/v1/agents/{agent}/", 200),
        ("anonymous", "GET", "/api/v1/agents/{agent}/instances/", 401),
        ("viewer", "GET", "/api/v1/agents/{agent}/instances/", 200),
        ("member", "GET", "/api/v1/agents/{agent}/instances/", 200),
        ("admin", "GET", "/api/v1/agents/{agent}/instances/", 200),
        ("owner", "GET", "/api/v1/agents/{agent}/instances/", 200),
        ("anonymous", "GET", "/api/v1/agents/{agent}/instances/{instance}/", 401),
        ("viewer", "GET", "/api/v1/agents/{agent}/instances/{instance}/", 200),
        ("member", "GET", "/api/v1/agents/{agent}/instances/{instance}/", 200),
        ("admin", "GET", "/api/v1/agents/{agent}/instances/{instance}/", 200),
        ("owner", "GET", "/api/v1/agents/{agent}/instances/{instance}/", 200),
        ("anonymous", "GET", "/api/v1/quota/", 401),
        ("viewer", "GET", "/api/v1/quota/", 200),
        ("member", "GET", "/api/v1/quota/", 200),
        ("admin", "GET", "/api/v1/quota/", 200),
        ("owner", "GET", "/api/v1/quota/", 200),
        ("anonymous", "GET", "/api/v1/config/", 401),
        ("viewer", "GET", "/api/v1/config/", 200),
        ("member", "GET", "/api/v1/config/", 200),
        ("admin", "GET", "/api/v1/config/", 200),
        ("owner", "GET", "/api/v1/config/", 200),
        ("anonymous", "GET", "/api/v1/config/agents/worker/", 401),
        ("viewer", "GET", "/api/v1/config/agents/worker/", 200),
        ("member", "GET", "/api/v1/config/agents/worker/", 200),
        ("admin", "GET", "/api/v1/config/agents/worker/", 200),
        ("owner", "GET", "/api/v1/config/agents/worker/", 200),
        # Agent and instance writes: members and up; agents:write.
        ("anonymous", "POST", "/api/v1/agents/", 401),
        ("viewer", "POST", "/api/v1/agents/", 403),
        ("member", "POST", "/api/v1/agents/", 201),
        ("admin", "POST", "/api/v1/agents/", 201),
        ("owner", "POST", "/api/v1/agents/", 201),
        ("anonymous", "PATCH", "/api/v1/agents/{agent}/", 401),
        ("viewer", "PATCH", "/api/v1/agents/{agent}/", 403),
        ("member", "PATCH", "/api/v1/agents/{agent}/", 200),
        ("admin", "PATCH", "/api/v1/agents/{agent}/", 200),
        ("owner", "PATCH", "/api/v1/agents/{agent}/", 200),
        ("anonymous", "POST", "/api/v1/agents/{agent}/instances/", 401),
        ("viewer", "POST", "/api/v1/agents/{agent}/instances/", 403),
        ("member", "POST", "/api/v1/agents/{agent}/instances/", 201),
        ("admin", "POST", "/api/v1/agents/{agent}/instances/", 201),
        ("owner", "POST", "/api/v1/agents/{agent}/instances/", 201),
        ("anonymous", "POST", "/api/v1/agents/{agent}/instances/{instance}/stop/", 401),
        ("viewer", "POST", "/api/v1/agents/{agent}/instances/{instance}/stop/", 403),
        ("member", "POST", "/api/v1/agents/{agent}/instances/{instance}/stop/", 200),
        ("admin", "POST", "/api/v1/agents/{agent}/instances/{instance}/stop/", 200),
        ("owner", "POST", "/api/v1/agents/{agent}/instances/{instance}/stop/", 200),
        ("anonymous", "DELETE", "/api/v1/agents/{agent}/", 401),
        ("viewer", "DELETE", "/api/v1/agents/{agent}/", 403),
        ("member", "DELETE", "/api/v1/agents/{agent}/", 204),
        ("admin", "DELETE", "/api/v1/agents/{agent}/", 204),
        ("owner", "DELETE", "/api/v1/agents/{agent}/", 204),
        # Config writes: admins and owners; config:write.
        ("anonymous", "PUT", "/api/v1/config/feature.flag/", 401),
        ("viewer", "PUT", "/api/v1/config/feature.flag/", 403),
        ("member", "PUT", "/api/v1/config/feature.flag/", 403),
        ("admin", "PUT", "/api/v1/config/feature.flag/", 200),
        ("owner", "PUT", "/api/v1/config/feature.flag/", 200),
    ],
)
def test_api_role_matrix(
    org, client_for, in_tenant, django_capture_on_commit_callbacks, role, method, path, status
):
    with in_tenant(org):
        agent = make_agent("Matrix target")
        instance = services.instance_request(actor=system(), agent_id=agent.pk)
        before = agents_state()
    client = client_for(org, None if role == "anonymous" else org.user(role))

    with django_capture_on_commit_callbacks() as callbacks:
        response = send(
            client,
            method.lower(),
            path.format(agent=agent.pk, instance=instance.pk),
            API_BODIES.get((method, path)),
        )

    assert response.status_code == status
    if status in (401, 403):
        assert error(response)[0] == ("not_authenticated" if status == 401 else "permission_denied")
        assert callbacks == []
        with in_tenant(org):
            assert agents_state() == before


def test_another_organization_gets_404_and_changes_nothing(org, other_org, client_for, in_tenant):
    with in_tenant(org):
        agent = make_agent("Acme only")
        instance = services.instance_request(actor=system(), agent_id=agent.pk)
        services.config_set(actor=system(), key="acme.secret", value="hunter2")

        def state():
            return (
                sorted(Agent.objects.values_list("id", "name", "description")),
                sorted(AgentInstance.objects.values_list("id", "status")),
                list(ResourcePool.objects.values_list("agents", "instances", "cpu_millicores")),
                sorted(ConfigKey.objects.values_list("key", "version")),
            )

        before = state()
    intruders = [
        (client_for(other_org, other_org.admin), {}),
        bearer_client(other_org, other_org.owner, client_for),
        key_client(other_org, ["agents:read", "agents:write", "config:read"], client_for),
    ]

    for client, headers in intruders:
        for method, path, body in api_calls(agent, instance):
            if str(agent.pk) not in path:
                continue
            response = send(client, method.lower(), path, body, **headers)
            assert response.status_code == 404, (path, response.status_code)
            assert error(response)[0] == "not_found"
        listing = send(client, "get", "/api/v1/agents/?search=Acme", **headers).json()
        assert listing["count"] == 0
        config = send(client, "get", "/api/v1/config/acme.secret/", **headers)
        assert config.status_code == 404
        quota = send(client, "get", "/api/v1/quota/", **headers).json()
        with in_tenant(other_org):
            assert quota["agents"]["used"] == ResourcePool.objects.get(pk=1).agents

    with in_tenant(org):
        assert state() == before


def test_acme_credentials_are_refused_on_globex_host(org, other_org, client_for, in_tenant):
    _, token = bearer_client(org, org.owner, client_for)
    _, key = key_client(org, ["agents:read"], client_for)

    for headers in (token, key):
        response = send(client_for(other_org), "get", "/api/v1/agents/", **headers)
        assert response.status_code == 401


def test_config_changed_never_reaches_another_organizations_group(
    org, other_org, listen, django_capture_on_commit_callbacks
):
    acme_hears = listen(org.tenant, "config.changed")
    globex_hears = listen(other_org.tenant, "config.changed")

    with context.tenant_context(org.tenant), django_capture_on_commit_callbacks(execute=True):
        services.config_set(actor=system(), key="agents.defaults", value={"who": "acme"})

    assert acme_hears()["data"]["value"] == {"who": "acme"}
    with pytest.raises(TimeoutError):
        globex_hears(timeout=0.5)


def test_hostile_input_is_a_4xx_never_a_5xx(org, client_for, in_tenant):
    with in_tenant(org):
        agent = make_agent("Hostile")
    client = client_for(org, org.admin)

    assert send(client, "get", "/api/v1/agents/?type=x%00").status_code == 400
    assert send(client, "get", "/api/v1/agents/?type=defaults").status_code == 400
    # NUL in a query value: refused by the API base for every endpoint (core.api.check_query).
    assert send(client, "get", "/api/v1/agents/?search=a%00b").status_code == 400
    assert send(client, "get", "/api/v1/config/a%00b/").status_code == 404
    assert send(client, "delete", "/api/v1/config/a%00b/").status_code == 400
    assert send(client, "put", "/api/v1/config/a.b/", {"value": "\u0000"}).status_code == 400
    bad_config = send(client, "patch", f"/api/v1/agents/{agent.pk}/", {"config": {"\u0000": 1}})
    bad_name = send(client, "patch", f"/api/v1/agents/{agent.pk}/", {"name": "a\u0000"})

    assert (bad_config.status_code, bad_name.status_code) == (400, 400)
    assert set(error(bad_config)[1]) == {"config"} and set(error(bad_name)[1]) == {"name"}


def test_the_list_shape_is_the_serializers_and_status_ignores_stopped_history(org, in_tenant):
    """The list builds its rows directly (agents.api._agent_data): they must be exactly what
    AgentSerializer (the documented schema) gives, for every status."""
    from agents import selectors
    from agents.api import AgentSerializer, _agent_data

    actor = system()
    with in_tenant(org):
        idle = make_agent("Shape idle", permissions=["tasks:publish"], tools=["search", "web"])
        busy = make_agent("Shape busy", config={"model": "large", "nested": {"a": [1, 2]}})
        first = services.instance_request(actor=actor, agent_id=busy.pk)
        services.instance_report(actor=actor, instance_id=first.pk, status="running")
        services.instance_request(actor=actor, agent_id=busy.pk)  # pending
        for _ in range(3):  # history: stopped instances count for nothing
            old = services.instance_request(actor=actor, agent_id=idle.pk)
            services.instance_stop(actor=actor, agent_id=idle.pk, instance_id=old.pk)
        stopping = make_agent("Shape stopping")
        going = services.instance_request(actor=actor, agent_id=stopping.pk)
        services.instance_report(actor=actor, instance_id=going.pk, status="running")
        services.instance_stop(actor=actor, agent_id=stopping.pk, instance_id=going.pk)
        limits = selectors.limits_get()
        agents = list(selectors.agent_list(actor=actor, search="Shape"))
        for agent in agents:
            assert (
                _agent_data(agent, limits)
                == AgentSerializer(agent, context={"limits": limits}).data
            )
        by_name = {agent.name: agent for agent in agents}
    assert (by_name["Shape idle"].status, by_name["Shape idle"].active_instances) == ("idle", 0)
    assert (by_name["Shape busy"].status, by_name["Shape busy"].active_instances) == (
        "running",
        2,
    )
    assert by_name["Shape stopping"].status == "stopping"

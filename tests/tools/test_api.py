"""The tools API: write (versioned, compile-checked), read, run; roles, credentials, other
organizations, and the documented run shape."""

from __future__ import annotations

import json
import uuid

import pytest

from audit.models import AuditEvent
from tenants import context
from tests.agents.test_api import bearer_client, error, key_client, send
from tests.tools.conftest import ECHO, SCHEMA, make_tool
from tools.models import Tool, ToolVersion

TOOL = {
    "name": "greet",
    "description": "Says hello.",
    "code": "async function run(input) { console.log('hi'); return `Hello, ${input.name}` }",
    "input_schema": SCHEMA,
    "timeout_ms": 2000,
    "memory_mb": 16,
    "permissions": ["kv:read"],
}


@pytest.fixture(autouse=True)
def _api_settings(settings):
    from credentials import keyring

    settings.API_KEY_CREATE_RATE = "100000/h"
    keyring.forget()
    yield
    keyring.forget()


def test_write_read_run_and_delete_a_tool(org, client_for):
    client = client_for(org, org.admin)

    created = send(client, "post", "/api/v1/tools/", TOOL)
    tool_id = created.json()["id"]
    read = send(client, "get", f"/api/v1/tools/{tool_id}/")
    listed = send(client, "get", "/api/v1/tools/")
    ran = send(client, "post", f"/api/v1/tools/{tool_id}/runs/", {"input": {"name": "Ada"}})
    deleted = send(client, "delete", f"/api/v1/tools/{tool_id}/")
    gone = send(client, "get", f"/api/v1/tools/{tool_id}/")

    assert created.status_code == 201
    body = created.json()
    assert {k: v for k, v in body.items() if k not in {"id", "created_at", "updated_at"}} == {
        **TOOL,
        "version": 1,
        "created_by": org.admin.email,
    }
    assert read.json() == body
    assert listed.json()["count"] == 1 and listed.json()["results"] == [body]
    assert ran.status_code == 200
    run = ran.json()
    assert set(run) == {"status", "output", "logs", "duration_ms", "memory_bytes", "version"}
    assert (run["status"], run["output"], run["logs"], run["version"]) == (
        "ok",
        "Hello, Ada",
        ["hi"],
        1,
    )
    assert run["duration_ms"] > 0 and run["memory_bytes"] > 0
    assert deleted.status_code == 204
    assert gone.status_code == 404


def test_saving_code_makes_a_new_version_and_old_versions_still_run(org, client_for):
    client = client_for(org, org.admin)
    tool_id = send(client, "post", "/api/v1/tools/", TOOL).json()["id"]

    renamed = send(client, "patch", f"/api/v1/tools/{tool_id}/", {"description": "Hi."})
    changed = send(
        client,
        "patch",
        f"/api/v1/tools/{tool_id}/",
        {"code": "function run(input) { return 'v2 ' + input.name }"},
    )
    versions = send(client, "get", f"/api/v1/tools/{tool_id}/versions/")
    current = send(client, "post", f"/api/v1/tools/{tool_id}/runs/", {"input": {"name": "A"}})
    first = send(
        client, "post", f"/api/v1/tools/{tool_id}/runs/", {"input": {"name": "A"}, "version": 1}
    )
    missing = send(
        client, "post", f"/api/v1/tools/{tool_id}/runs/", {"input": {"name": "A"}, "version": 9}
    )

    assert renamed.json()["version"] == 1
    assert changed.json()["version"] == 2
    assert [v["number"] for v in versions.json()["results"]] == [2, 1]
    assert (current.json()["output"], current.json()["version"]) == ("v2 A", 2)
    assert (first.json()["output"], first.json()["version"]) == ("Hello, A", 1)
    assert missing.status_code == 404


def test_a_syntax_error_is_refused_on_save_with_the_line(org, client_for, in_tenant):
    client = client_for(org, org.admin)
    response = send(
        client, "post", "/api/v1/tools/", {**TOOL, "code": "function run(input) {\n  return (\n}"}
    )
    assert response.status_code == 422  # a string, as documented, that does not compile
    code, detail = error(response)
    assert code == "unprocessable"
    assert "SyntaxError" in detail["code"][0]
    assert detail["code"][0].startswith("Line 3: SyntaxError")
    with in_tenant(org):
        assert not Tool.objects.exists()


def test_a_syntax_check_runs_nothing(org, client_for, in_tenant):
    """The compile check parses the code only: a loop at the top level does not run."""
    client = client_for(org, org.admin)
    response = send(
        client, "post", "/api/v1/tools/", {**TOOL, "code": "while (true) {}\n" + TOOL["code"]}
    )
    assert response.status_code == 201


@pytest.mark.parametrize(
    ("change", "field", "code"),
    [
        # Within the document's range, above the plan's maximum: a conflict.
        ({"timeout_ms": 10_001}, "timeout_ms", "conflict"),
        ({"memory_mb": 65}, "memory_mb", "conflict"),
        ({"permissions": ["secrets:x"]}, "permissions", "invalid"),
        # An object, as documented, that is not a JSON Schema.
        ({"input_schema": {"type": "nope"}}, "input_schema", "unprocessable"),
        ({"input_schema": {"type": "string", "pattern": "^(a+)+$"}}, "input_schema", "invalid"),
        ({"input_schema": [1]}, "input_schema", "invalid"),
        ({"name": "Bad Name"}, "name", "invalid"),
        ({"code": "x" * (64 * 1024 + 1)}, "code", "invalid"),
        ({"code": "   "}, "code", "invalid"),
        ({"tenant": "other"}, "tenant", "invalid"),
    ],
)
def test_bad_tools_are_refused_and_change_nothing(org, client_for, in_tenant, change, field, code):
    client = client_for(org, org.admin)
    response = send(client, "post", "/api/v1/tools/", {**TOOL, **change})
    assert response.status_code == {"invalid": 400, "conflict": 409, "unprocessable": 422}[code]
    got_code, detail = error(response)
    assert got_code == code
    assert field in detail
    with in_tenant(org):
        assert not Tool.objects.exists()


def test_permissions_outside_the_plan_are_refused(org, client_for, in_tenant):
    from tenants.models import Plan

    with context.public_context():
        plan = Plan.objects.get(pk=org.tenant.plan_id)
        Plan.objects.filter(pk=plan.pk).update(allowed_tool_permissions=["kv:read"])
    client = client_for(org, org.admin)
    response = send(client, "post", "/api/v1/tools/", {**TOOL, "permissions": ["publish"]})
    assert response.status_code == 409
    assert "Not allowed by your plan: publish." in error(response)[1]["permissions"][0]


def test_a_duplicate_name_is_a_409(org, client_for, in_tenant):
    with in_tenant(org):
        make_tool("greet")
    response = send(client_for(org, org.admin), "post", "/api/v1/tools/", TOOL)
    assert response.status_code == 409
    assert error(response)[1] == {"name": ["A tool with this name exists."]}


def test_the_run_shape_for_every_status(org, client_for, in_tenant):
    with in_tenant(org):
        tools = {
            "loop": make_tool("loop", "function run() { while (true) {} }", timeout_ms=300),
            "bomb": make_tool("bomb", "function run() { const a = []; while (1) a.push([a]) }"),
            "boom": make_tool("boom", "function run() { throw new RangeError('no') }"),
            "strict": make_tool("strict", ECHO, input_schema=SCHEMA),
        }
    client = client_for(org, org.member)

    def run(name, value):
        return send(client, "post", f"/api/v1/tools/{tools[name].pk}/runs/", {"input": value})

    loop, bomb, boom = run("loop", {}), run("bomb", {}), run("boom", {})
    invalid = run("strict", {"name": 5})
    extra = run("strict", {"name": "a", "tenant": "x"})

    assert (loop.json()["status"], loop.json()["error"]["message"]) == (
        "timeout",
        "Stopped after 300 ms.",
    )
    assert bomb.json()["status"] == "memory_limit"
    assert boom.json()["status"] == "error"
    assert boom.json()["error"]["message"] == "no"
    assert "RangeError: no" in boom.json()["error"]["stack"]
    assert invalid.json()["status"] == "invalid_input"
    assert invalid.json()["error"]["message"] == "name: 5 is not of type 'string'"
    assert extra.json()["status"] == "invalid_input"
    for response in (loop, bomb, boom, invalid):
        assert response.status_code == 200
        assert response.json()["output"] is None


@pytest.mark.parametrize(
    "body",
    [{}, {"input": {}, "extra": 1}, {"input": {}, "version": 0}, {"input": {}, "version": "x"}],
)
def test_bad_run_requests_are_400(org, client_for, in_tenant, body):
    with in_tenant(org):
        tool = make_tool()
    response = send(client_for(org, org.member), "post", f"/api/v1/tools/{tool.pk}/runs/", body)
    assert response.status_code == 400


def test_an_oversized_input_is_invalid_input(org, client_for, in_tenant, settings):
    settings.TOOLS_MAX_INPUT_BYTES = 100
    with in_tenant(org):
        tool = make_tool()
    response = send(
        client_for(org, org.member),
        "post",
        f"/api/v1/tools/{tool.pk}/runs/",
        {"input": {"x": "y" * 200}},
    )
    assert response.json()["status"] == "invalid_input"
    assert response.json()["error"]["message"] == "The input is larger than 100 bytes."


def test_every_run_is_audited(org, client_for, in_tenant):
    with in_tenant(org):
        tool = make_tool()
    client = client_for(org, org.member)
    send(client, "post", f"/api/v1/tools/{tool.pk}/runs/", {"input": {"a": 1}})
    with in_tenant(org):
        event = AuditEvent.objects.filter(action="tool.run").get()
    assert (event.actor_label, event.resource_id, event.result) == (
        org.member.email,
        str(tool.pk),
        "success",
    )
    assert {k: event.details[k] for k in ("tool", "version", "status")} == {
        "tool": "echo",
        "version": 1,
        "status": "ok",
    }
    assert event.details["duration_ms"] > 0 and event.details["cpu_ms"] >= 0


ROLE_EXPECTATIONS = {
    # role: (list, run, write)
    "viewer": (200, 403, 403),
    "member": (200, 200, 403),
    "admin": (200, 200, 201),
    "owner": (200, 200, 201),
}


@pytest.mark.parametrize("role", list(ROLE_EXPECTATIONS))
def test_role_matrix(org, client_for, in_tenant, role):
    with in_tenant(org):
        tool = make_tool()
    client = client_for(org, org.user(role))
    listed = send(client, "get", "/api/v1/tools/")
    ran = send(client, "post", f"/api/v1/tools/{tool.pk}/runs/", {"input": {}})
    wrote = send(client, "post", "/api/v1/tools/", {**TOOL, "name": f"t-{role}"})
    assert (listed.status_code, ran.status_code, wrote.status_code) == ROLE_EXPECTATIONS[role]


def test_anonymous_and_bad_credentials_are_401(org, client_for, in_tenant):
    with in_tenant(org):
        tool = make_tool()
    client = client_for(org)
    assert send(client, "get", "/api/v1/tools/").status_code == 401
    assert send(client, "post", f"/api/v1/tools/{tool.pk}/runs/", {"input": {}}).status_code == 401
    bad = {"HTTP_AUTHORIZATION": "Bearer not-a-token"}
    assert send(client, "get", "/api/v1/tools/", **bad).status_code == 401


def test_api_key_scopes_and_jwts(org, client_for, in_tenant):
    with in_tenant(org):
        tool = make_tool()
    runner, headers = key_client(org, ["tools:run"], client_for)
    reader, reader_headers = key_client(org, ["tools:read"], client_for)
    jwt_client, jwt_headers = bearer_client(org, org.admin, client_for)
    path = f"/api/v1/tools/{tool.pk}/runs/"
    assert send(runner, "post", path, {"input": {}}, **headers).status_code == 200
    assert send(runner, "get", "/api/v1/tools/", **headers).status_code == 403
    assert send(reader, "post", path, {"input": {}}, **reader_headers).status_code == 403
    assert send(jwt_client, "post", path, {"input": {}}, **jwt_headers).status_code == 200


# --- Other organizations ---------------------------------------------------------------------


def test_another_organization_gets_404_on_every_route(org, other_org, client_for, in_tenant):
    with in_tenant(org):
        tool = make_tool(code=ECHO)
        before = ToolVersion.objects.count()
    attacker = client_for(other_org, other_org.owner)
    routes = [
        ("get", f"/api/v1/tools/{tool.pk}/", None),
        ("patch", f"/api/v1/tools/{tool.pk}/", {"code": "function run() { return 'owned' }"}),
        ("delete", f"/api/v1/tools/{tool.pk}/", None),
        ("get", f"/api/v1/tools/{tool.pk}/versions/", None),
        ("post", f"/api/v1/tools/{tool.pk}/runs/", {"input": {}}),
        ("get", f"/api/v1/tools/{uuid.uuid4()}/", None),
    ]
    for method, path, data in routes:
        response = send(attacker, method, path, data)
        assert response.status_code == 404, (method, path)
        assert error(response)[0] == "not_found"
    assert send(attacker, "get", "/api/v1/tools/").json()["count"] == 0
    with in_tenant(org):
        assert Tool.objects.get(pk=tool.pk).version == 1
        assert ToolVersion.objects.count() == before
        assert not AuditEvent.objects.filter(action="tool.run").exists()


def test_a_token_of_one_organization_is_refused_on_another_host(
    org, other_org, client_for, in_tenant
):
    _, headers = bearer_client(org, org.admin, client_for)
    response = send(client_for(other_org), "get", "/api/v1/tools/", **headers)
    assert response.status_code == 401


def test_a_tenant_in_the_body_changes_nothing(org, client_for, in_tenant):
    with in_tenant(org):
        tool = make_tool()
    response = send(
        client_for(org, org.member),
        "post",
        f"/api/v1/tools/{tool.pk}/runs/",
        {"input": {}, "tenant": "globex"},
    )
    assert response.status_code == 400
    assert error(response)[1] == {"tenant": ["Unknown field."]}


def test_openapi_documents_the_tools_routes(org, client_for):
    schema = json.loads(client_for(org).get("/api/schema/?format=json").content)
    paths = schema["paths"]
    assert set(paths["/api/v1/tools/{tool_id}/runs/"]) == {"post"}
    assert schema["components"]["schemas"]["RunStatusEnum"]["enum"] == [
        "ok",
        "timeout",
        "memory_limit",
        "error",
        "invalid_input",
    ]
    assert "429" in paths["/api/v1/tools/{tool_id}/runs/"]["post"]["responses"]

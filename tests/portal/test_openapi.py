"""The OpenAPI document: valid, complete, and honest about permissions, errors and auth."""

from __future__ import annotations

import yaml
from django.core.management import call_command
from drf_spectacular.validation import validate_schema

from core.permissions import PUBLIC

HTTP_METHODS = {"get", "post", "put", "patch", "delete"}


def _schema(client) -> dict:
    response = client.get("/api/schema/")
    assert response.status_code == 200
    return yaml.safe_load(response.content)


def test_the_document_validates_without_warnings(org, tmp_path):
    path = tmp_path / "schema.yaml"
    # --fail-on-warn: an endpoint spectacular cannot describe (no serializer, unknown auth)
    # fails here, so every endpoint added later is documented too.
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(path))
    validate_schema(yaml.safe_load(path.read_text()))


def test_every_operation_declares_permission_auth_and_errors(org, client_for):
    schema = _schema(client_for(org))
    assert set(schema["components"]["securitySchemes"]) == {"jwt", "apiKey", "session"}
    assert schema["components"]["securitySchemes"]["jwt"]["bearerFormat"] == "JWT"
    operations = [
        (path, method, operation)
        for path, item in schema["paths"].items()
        for method, operation in item.items()
        if method in HTTP_METHODS
    ]
    assert len(operations) == 59
    for path, method, operation in operations:
        needed = operation["x-required-permission"]
        codes = set(operation["responses"])
        error_ref = "#/components/schemas/Error"
        assert operation["responses"]["400"]["content"]["application/json"]["schema"] == {
            "$ref": error_ref
        }, (path, method)
        assert {"400", "429"} <= codes, (path, method)
        if needed == PUBLIC:
            assert "security" not in operation, (path, method)
        else:
            assert {"401", "403"} <= codes, (path, method)
            assert operation["security"] == [{"jwt": []}, {"apiKey": []}, {"session": []}]
            assert f"`{needed}`" in operation["description"], (path, method)
        assert len(operation["operationId"]) > 0


def test_the_documented_paths_are_the_routed_ones(org, client_for):
    paths = set(_schema(client_for(org))["paths"])
    assert {
        "/api/v1/auth/token",
        "/api/v1/auth/token/refresh",
        "/api/v1/auth/token/revoke",
        "/api/v1/api-keys/",
        "/api/v1/api-keys/{key_id}/",
        "/api/v1/organization/",
    } <= paths


def test_the_docs_page_renders_without_a_cdn(org, client_for):
    response = client_for(org).get("/api/docs/")
    assert response.status_code == 200
    page = response.content.decode()
    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/" in page
    assert "cdn." not in page and "jsdelivr" not in page


def _operations(schema: dict):
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            if method in HTTP_METHODS:
                yield path, method, operation


def _component(schema: dict, ref: str) -> dict:
    return schema["components"]["schemas"][ref.rsplit("/", 1)[1]]


def test_every_json_body_refuses_unknown_fields_in_the_document_too(org, client_for):
    schema = _schema(client_for(org))
    bodies = 0
    for path, method, operation in _operations(schema):
        for media, content in operation.get("requestBody", {}).get("content", {}).items():
            body = content["schema"]
            if "$ref" not in body:  # a batch: an array of a component
                body = body["items"]
            component = _component(schema, body["$ref"])
            assert component["additionalProperties"] is False, (path, method, media)
            bodies += 1
    assert bodies >= 20


def test_the_document_states_patterns_ranges_and_nullability_the_server_enforces(org, client_for):
    schema = _schema(client_for(org))
    components = schema["components"]["schemas"]
    parameters = {
        (path, method): {p["name"]: p["schema"] for p in operation.get("parameters", [])}
        for path, method, operation in _operations(schema)
    }
    key = parameters[("/api/v1/config/{key}/", "put")]["key"]
    assert key["pattern"].startswith("^[a-z]") and key["maxLength"] == 128
    agent_type = parameters[("/api/v1/config/agents/{agent_type}/", "get")]["agent_type"]
    assert agent_type["not"] == {"enum": ["defaults"]}
    agents = parameters[("/api/v1/agents/", "get")]
    assert agents["page_size"] == {"type": "integer", "minimum": 1, "maximum": 200}
    assert set(agents["status"]["enum"]) == {"idle", "pending", "running", "stopping"}
    assert parameters[("/api/v1/audit/events/", "get")]["limit"]["maximum"] == 200
    agent = components["AgentInputRequest"]["properties"]
    assert {"pattern"} <= set(agent["cpu"]) and {"pattern"} <= set(agent["memory"])
    assert agent["config"]["type"] == "object"
    assert set(components["AgentInputRequest"]["required"]) == {"name", "type", "cpu", "memory"}
    assert "required" not in components["PatchedAgentInputRequest"]
    value = components["ConfigValueInputRequest"]["properties"]["value"]
    assert "nullable" not in value and {"type": "boolean"} in value["anyOf"]
    scopes = components["ApiKeyCreateInputRequest"]["properties"]["scopes"]["items"]
    assert "agents:read" in _component(schema, scopes["$ref"])["enum"]


def test_blank_enum_query_values_and_bad_pages_are_400s(org, client_for):
    client = client_for(org, org.owner)
    bad = ("status=", "type=", "page_size=0", "page_size=201", "page=0", "page=x")
    for query in (*bad, "page_size=5&page_size=10"):
        response = client.get(f"/api/v1/agents/?{query}")
        assert response.status_code == 400, query
        assert response.json()["error"]["code"] == "invalid"
    assert client.get("/api/v1/agents/?page_size=200").status_code == 200

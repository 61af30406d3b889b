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

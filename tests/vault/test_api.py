"""The secrets and knowledge API: write-only values, roles, bad input, other organizations."""

from __future__ import annotations

import json

import pytest

from audit.models import AuditEvent
from core.actors import Actor
from tenants import context
from tests.credentials.helpers import api_key, api_key_header, bearer, error_code, token_pair
from vault import services
from vault.models import KnowledgeDocument, Secret

VALUE = "sk-live-SUPERSECRET-9876"
SYSTEM = Actor.system("tests")


def call(client, method: str, path: str, data=None, **headers):
    body = json.dumps(data) if data is not None else None
    return getattr(client, method)(path, data=body, content_type="application/json", **headers)


@pytest.fixture
def admin_api(org, client_for):
    client = client_for(org)
    return lambda method, path, data=None: call(
        client, method, path, data, **bearer(token_pair(org, org.admin).access)
    )


def as_role(org, client_for, role):
    client = client_for(org)
    headers = bearer(token_pair(org, org.user(role)).access)
    return lambda method, path, data=None: call(client, method, path, data, **headers)


def events(org, action: str) -> list[AuditEvent]:
    with context.tenant_context(org.tenant):
        return list(AuditEvent.objects.filter(action=action).order_by("sequence"))


# --- Secrets -------------------------------------------------------------------------------------


def test_set_a_secret_shows_it_masked_and_never_returns_the_value(org, admin_api):
    response = admin_api("post", "/api/v1/secrets/", {"name": "STRIPE_KEY", "value": VALUE})

    assert response.status_code == 201
    body = response.json()
    assert body["name"] == "STRIPE_KEY"
    assert body["masked"] == "••••9876"
    assert body["updated_by"] == "admin@acme.test"
    assert "value" not in body and VALUE not in response.text
    assert response["Cache-Control"] == "no-store"
    listing = admin_api("get", "/api/v1/secrets/")
    assert [item["name"] for item in listing.json()["results"]] == ["STRIPE_KEY"]
    assert VALUE not in listing.text
    detail = admin_api("get", f"/api/v1/secrets/{body['id']}/")
    assert detail.json() == body
    (event,) = events(org, "secret.created")
    assert event.details == {"name": "STRIPE_KEY"}
    assert VALUE not in json.dumps(event.details)


def test_replace_and_delete_a_secret(org, admin_api):
    created = admin_api("post", "/api/v1/secrets/", {"name": "TOKEN", "value": VALUE}).json()

    replaced = admin_api(
        "put", f"/api/v1/secrets/{created['id']}/", {"value": "another-value-0000"}
    )
    again = admin_api("post", "/api/v1/secrets/", {"name": "TOKEN", "value": "third-one-1111"})
    deleted = admin_api("delete", f"/api/v1/secrets/{created['id']}/")

    assert (replaced.status_code, replaced.json()["masked"]) == (200, "••••0000")
    assert (again.status_code, again.json()["id"]) == (200, created["id"])
    assert deleted.status_code == 204
    assert [e.action for e in events(org, "secret.replaced")] == ["secret.replaced"] * 2
    assert len(events(org, "secret.deleted")) == 1
    with context.tenant_context(org.tenant):
        assert not Secret.objects.exists()


def test_a_short_value_is_masked_without_its_end(admin_api):
    response = admin_api("post", "/api/v1/secrets/", {"name": "PIN", "value": "1234"})

    assert response.json()["masked"] == "••••"


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"name": "lower_case", "value": "x"}, "name"),
        ({"name": "1ABC", "value": "x"}, "name"),
        ({"name": "A" * 65, "value": "x"}, "name"),
        ({"name": "OK", "value": ""}, "value"),
        ({"name": "OK", "value": "x" * 8193}, "value"),
        ({"name": "OK", "value": 12345}, "value"),
        ({"name": "OK"}, "value"),
        ({"name": "OK", "value": "x", "tenant": "globex"}, "tenant"),
        ({"name": "OK", "value": "a\x00b"}, "value"),
    ],
)
def test_bad_secrets_are_refused_and_change_nothing(org, admin_api, data, field):
    response = admin_api("post", "/api/v1/secrets/", data)

    assert response.status_code == 400
    assert error_code(response) == "invalid"
    assert field in response.json()["error"]["detail"]
    with context.tenant_context(org.tenant):
        assert not Secret.objects.exists()


@pytest.mark.parametrize(
    ("role", "read", "write"),
    [("viewer", 403, 403), ("member", 200, 403), ("admin", 200, 201), ("owner", 200, 201)],
)
def test_secret_role_matrix(org, client_for, role, read, write):
    api = as_role(org, client_for, role)

    assert api("get", "/api/v1/secrets/").status_code == read
    assert api("post", "/api/v1/secrets/", {"name": "X_KEY", "value": VALUE}).status_code == write


def test_anonymous_gets_nothing(org, client_for):
    client = client_for(org)

    assert client.get("/api/v1/secrets/").status_code == 401
    assert client.get("/api/v1/knowledge/").status_code == 401


def test_another_organization_cannot_see_or_touch_a_secret(org, other_org, client_for):
    with context.tenant_context(org.tenant):
        secret, _ = services.secret_set(actor=SYSTEM, name="ACME_ONLY", value=VALUE)
    intruder = client_for(other_org)
    headers = bearer(token_pair(other_org, other_org.admin).access)
    path = f"/api/v1/secrets/{secret.pk}/"

    assert call(intruder, "get", path, **headers).status_code == 404
    assert call(intruder, "put", path, {"value": "stolen-value-1234"}, **headers).status_code == 404
    assert call(intruder, "delete", path, **headers).status_code == 404
    assert call(intruder, "get", "/api/v1/secrets/", **headers).json()["results"] == []
    # The other organization's token on this organization's host.
    here = client_for(org)
    assert call(here, "get", "/api/v1/secrets/", **headers).status_code == 401
    with context.tenant_context(org.tenant):
        assert Secret.objects.get(pk=secret.pk).value == VALUE


def test_an_api_key_needs_the_scope(org, client_for):
    _, readonly = api_key(org, ["agents:read"])
    _, reader = api_key(org, ["secrets:read"])
    client = client_for(org)

    assert client.get("/api/v1/secrets/", **api_key_header(readonly)).status_code == 403
    assert client.get("/api/v1/secrets/", **api_key_header(reader)).status_code == 200


# --- Knowledge -----------------------------------------------------------------------------------


def test_knowledge_documents_round_trip_with_the_text_encrypted(org, admin_api):
    response = admin_api(
        "post",
        "/api/v1/knowledge/",
        {"title": "Refund policy", "text": "Refunds within 30 days.", "tags": ["policy", "sales"]},
    )

    assert response.status_code == 201
    document = response.json()
    assert (document["title"], document["tags"], document["size"]) == (
        "Refund policy",
        ["policy", "sales"],
        23,
    )
    with context.tenant_context(org.tenant):
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute("SELECT text FROM vault_knowledgedocument")
            (stored,) = cursor.fetchone()
    assert stored.startswith("ap1$") and "Refunds" not in stored
    detail = admin_api("get", f"/api/v1/knowledge/{document['id']}/")
    assert detail.json()["text"] == "Refunds within 30 days."
    listing = admin_api("get", "/api/v1/knowledge/").json()["results"]
    assert "text" not in listing[0]
    changed = admin_api(
        "patch", f"/api/v1/knowledge/{document['id']}/", {"text": "Refunds within 14 days."}
    )
    assert changed.json()["text"] == "Refunds within 14 days."
    (created,) = events(org, "knowledge.created")
    assert "Refunds" not in json.dumps(created.details)
    assert admin_api("delete", f"/api/v1/knowledge/{document['id']}/").status_code == 204


def test_knowledge_is_searched_by_title_and_tags(acme, admin_api):
    for title, tags in [
        ("Refund policy", ["policy"]),
        ("Shipping times", ["logistics", "policy"]),
        ("Onboarding", ["hr"]),
    ]:
        services.knowledge_create(actor=SYSTEM, title=title, text="...", tags=tags)

    def titles(query: str) -> list[str]:
        return [
            d["title"] for d in admin_api("get", f"/api/v1/knowledge/{query}").json()["results"]
        ]

    assert titles("?search=refund") == ["Refund policy"]
    assert titles("?search=policy") == ["Refund policy", "Shipping times"]
    assert titles("?tag=policy&tag=logistics") == ["Shipping times"]
    assert titles("?tag=hr") == ["Onboarding"]
    assert titles("?search=nothing") == []


def test_listing_knowledge_never_decrypts(org, admin_api):
    with context.tenant_context(org.tenant):
        for number in range(5):
            services.knowledge_create(actor=SYSTEM, title=f"Doc {number}", text="secret text")
        from django.db import connection

        with connection.cursor() as cursor:  # every text unreadable: a list must not care
            cursor.execute("UPDATE vault_knowledgedocument SET text = 'ap1$1$AAAA'")

    response = admin_api("get", "/api/v1/knowledge/")

    assert response.status_code == 200
    assert len(response.json()["results"]) == 5


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"title": "", "text": "x"}, "title"),
        ({"title": "x" * 201, "text": "x"}, "title"),
        ({"title": "A\x07B", "text": "x"}, "title"),
        ({"title": "T", "text": "x", "tags": ["Upper"]}, "tags"),
        ({"title": "T", "text": "x", "tags": [1]}, "tags"),
        ({"title": "T", "text": "x", "tags": ["a"] * 21}, "tags"),
        ({"title": "T"}, "text"),
        ({"title": 5, "text": "x"}, "title"),
        ({"title": "T", "text": "x", "size": 0}, "size"),
    ],
)
def test_bad_documents_are_refused(org, admin_api, data, field):
    response = admin_api("post", "/api/v1/knowledge/", data)

    assert response.status_code == 400
    assert field in response.json()["error"]["detail"]
    with context.tenant_context(org.tenant):
        assert not KnowledgeDocument.objects.exists()


def test_agents_read_knowledge_with_a_scoped_key(org, client_for):
    with context.tenant_context(org.tenant):
        document = services.knowledge_create(actor=SYSTEM, title="FAQ", text="Answer.")
    _, reader = api_key(org, ["knowledge:read"])
    _, other = api_key(org, ["agents:read"])
    client = client_for(org)

    assert (
        client.get(f"/api/v1/knowledge/{document.pk}/", **api_key_header(reader)).json()["text"]
        == "Answer."
    )
    assert client.get("/api/v1/knowledge/", **api_key_header(other)).status_code == 403
    refused = call(
        client, "post", "/api/v1/knowledge/", {"title": "x", "text": "y"}, **api_key_header(reader)
    )
    assert refused.status_code == 403


def test_another_organization_cannot_read_or_change_a_document(org, other_org, client_for):
    with context.tenant_context(org.tenant):
        document = services.knowledge_create(actor=SYSTEM, title="Acme plans", text="private")
    intruder = client_for(other_org)
    headers = bearer(token_pair(other_org, other_org.admin).access)
    path = f"/api/v1/knowledge/{document.pk}/"

    assert call(intruder, "get", path, **headers).status_code == 404
    assert call(intruder, "patch", path, {"title": "mine"}, **headers).status_code == 404
    assert call(intruder, "delete", path, **headers).status_code == 404
    assert (
        call(intruder, "get", "/api/v1/knowledge/?search=acme", **headers).json()["results"] == []
    )
    with context.tenant_context(org.tenant):
        assert KnowledgeDocument.objects.get(pk=document.pk).title == "Acme plans"


def test_a_tampered_document_answers_in_the_error_shape(org, admin_api):
    with context.tenant_context(org.tenant):
        document = services.knowledge_create(actor=SYSTEM, title="T", text="private words")
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute("UPDATE vault_knowledgedocument SET text = text || 'AA'")

    response = admin_api("get", f"/api/v1/knowledge/{document.pk}/")

    assert response.status_code == 500
    assert error_code(response) == "data_unreadable"
    assert "private" not in response.text and "Traceback" not in response.text


def test_agent_definitions_reference_secrets_by_name(org, other_org, client_for):
    with context.tenant_context(org.tenant):
        services.secret_set(actor=SYSTEM, name="ACME_TOKEN", value=VALUE)
    with context.tenant_context(other_org.tenant):
        services.secret_set(actor=SYSTEM, name="GLOBEX_TOKEN", value=VALUE)
    api = as_role(org, client_for, "member")
    agent = {"name": "Payer", "type": "worker", "cpu": "100m", "memory": "64MB"}

    created = api("post", "/api/v1/agents/", {**agent, "secrets": ["ACME_TOKEN"]})
    foreign = api("post", "/api/v1/agents/", {**agent, "name": "B", "secrets": ["GLOBEX_TOKEN"]})
    malformed = api("post", "/api/v1/agents/", {**agent, "name": "C", "secrets": ["bad name"]})

    assert created.status_code == 201
    assert created.json()["secrets"] == ["ACME_TOKEN"]
    assert VALUE not in created.text
    assert foreign.status_code == 409  # well-formed; no such secret here (another org's)
    assert foreign.json()["error"]["detail"]["secrets"] == ["No such secret: GLOBEX_TOKEN."]
    assert malformed.status_code == 400

"""The audit API: events list and export, for sessions, JWTs and API keys; roles; other orgs."""

from __future__ import annotations

import csv
import io
import json

import pytest
from django.http import StreamingHttpResponse

from audit import services
from core.actors import Actor
from tests.audit.conftest import events_after, head

EVENTS = "/api/v1/audit/events/"
EXPORT = "/api/v1/audit/export"
SYSTEM = Actor.system("tests")


@pytest.fixture(autouse=True)
def _api_settings(settings):
    from credentials import keyring

    settings.API_KEY_CREATE_RATE = "100000/h"
    keyring.forget()
    yield
    keyring.forget()


def bearer(org, user) -> dict[str, str]:
    from credentials import services as credentials
    from tenants import context

    with context.tenant_context(org.tenant):
        pair = credentials.token_pair_issue(actor=Actor.for_user(user), user=user)
    return {"HTTP_AUTHORIZATION": f"Bearer {pair.access}"}


def api_key(org, scopes: list[str]) -> dict[str, str]:
    from credentials import services as credentials
    from tenants import context

    with context.tenant_context(org.tenant):
        _, raw = credentials.api_key_create(
            actor=Actor.for_user(org.admin), name="audit test", scopes=scopes
        )
    return {"HTTP_AUTHORIZATION": f"Api-Key {raw}"}


def error(response) -> tuple[str, object]:
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "detail"}
    return body["error"]["code"], body["error"]["detail"]


@pytest.fixture
def logged(org, in_tenant):
    with in_tenant(org):
        return [
            services.record(
                actor=Actor.for_user(org.member),
                action="api.test",
                resource_type="doc",
                resource_id=n,
                result="denied" if n == 2 else "success",
                details={"n": n},
            )
            for n in range(5)
        ]


# --- Who may read --------------------------------------------------------------------------------


@pytest.mark.parametrize("path", [EVENTS, EXPORT + "?format=csv"])
def test_anonymous_gets_401(org, client_for, path):
    response = client_for(org).get(path)

    assert response.status_code == 401
    assert error(response)[0] == "not_authenticated"


@pytest.mark.parametrize("path", [EVENTS, EXPORT + "?format=csv"])
@pytest.mark.parametrize("role", ["viewer", "member"])
def test_viewers_and_members_get_403(org, client_for, path, role):
    response = client_for(org).get(path, **bearer(org, org.user(role)))

    assert response.status_code == 403
    assert error(response)[0] == "permission_denied"


@pytest.mark.parametrize("role", ["admin", "owner"])
def test_admins_and_owners_read_with_a_jwt(org, client_for, logged, role):
    response = client_for(org).get(EVENTS, {"action": "api.test"}, **bearer(org, org.user(role)))

    assert response.status_code == 200
    assert [e["sequence"] for e in response.json()["results"]] == [
        e.sequence for e in reversed(logged)
    ]


def test_a_session_reads_too(org, client_for, logged):
    response = client_for(org, org.admin).get(EVENTS, {"action": "api.test"})

    assert response.status_code == 200 and len(response.json()["results"]) == 5


def test_an_api_key_reads_and_is_the_actor_of_its_export(org, client_for, in_tenant, logged):
    headers = api_key(org, ["audit:read"])
    start = head_of(org, in_tenant)

    listed = client_for(org).get(EVENTS, {"action": "api.test"}, **headers)
    exported = client_for(org).get(EXPORT, {"format": "json", "action": "api.test"}, **headers)
    b"".join(exported.streaming_content)

    assert listed.status_code == 200 and exported.status_code == 200
    with in_tenant(org):
        [event] = [e for e in events_after(start) if e.action == "audit.exported"]
    assert event.actor_kind == "api_key" and event.actor_label.startswith("audit test (agp_")


def test_an_api_key_without_audit_read_is_refused(org, client_for):
    response = client_for(org).get(EVENTS, **api_key(org, ["org:read"]))

    assert response.status_code == 403


@pytest.mark.parametrize("path", [EVENTS, EXPORT + "?format=json"])
def test_another_organizations_credentials_are_refused(org, other_org, client_for, path):
    for headers in (bearer(other_org, other_org.admin), api_key(other_org, ["audit:read"])):
        response = client_for(org).get(path, **headers)

        assert response.status_code == 401, response.content


def head_of(org, in_tenant) -> int:
    with in_tenant(org):
        return head()


# --- The list ------------------------------------------------------------------------------------


def test_events_page_with_the_cursor(org, client_for, logged):
    client, headers = client_for(org), bearer(org, org.admin)

    first = client.get(EVENTS, {"action": "api.test", "limit": 2}, **headers).json()
    second = client.get(first["next"], **headers).json()
    third = client.get(second["next"], **headers).json()

    sequences = [e.sequence for e in reversed(logged)]
    assert [e["sequence"] for e in first["results"]] == sequences[:2]
    assert first["next_cursor"] == str(sequences[1])
    assert first["next"] == (
        f"http://{org.host}{EVENTS}?action=api.test&cursor={sequences[1]}&limit=2"
    )
    assert [e["sequence"] for e in second["results"]] == sequences[2:4]
    assert [e["sequence"] for e in third["results"]] == sequences[4:]
    assert third["next"] is None and third["next_cursor"] is None


def test_an_event_has_every_field(org, client_for, logged):
    response = client_for(org).get(
        EVENTS, {"action": "api.test", "result": "denied"}, **bearer(org, org.admin)
    )

    [event] = response.json()["results"]
    assert event == {
        "tenant_id": str(org.tenant.public_id),
        "sequence": logged[2].sequence,
        "occurred_at": logged[2].occurred_at.isoformat(),
        "actor_kind": "user",
        "actor_id": str(org.member.pk),
        "actor_label": "member@acme.test",
        "action": "api.test",
        "resource_type": "doc",
        "resource_id": "2",
        "result": "denied",
        "ip": None,
        "user_agent": "",
        "details": {"n": 2},
        "previous_hash": logged[1].hash,
        "hash": logged[2].hash,
    }


def test_filters_by_time_and_actor(org, client_for, logged):
    params = {
        "actor": "member@acme.test",
        "start": logged[1].occurred_at.isoformat().replace("+00:00", "Z"),
        "end": logged[3].occurred_at.isoformat().replace("+00:00", "Z"),
    }

    response = client_for(org).get(EVENTS, params, **bearer(org, org.admin))

    assert [e["resource_id"] for e in response.json()["results"]] == ["2", "1"]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"result": "maybe"}, "result"),
        ({"start": "last tuesday"}, "start"),
        ({"cursor": "-4"}, "cursor"),
        ({"limit": "1000"}, "limit"),
    ],
)
def test_bad_parameters_are_a_400_naming_them(org, client_for, params, field):
    response = client_for(org).get(EVENTS, params, **bearer(org, org.admin))

    assert response.status_code == 400
    code, detail = error(response)
    assert code == "invalid" and list(detail) == [field]


def test_a_tenant_parameter_changes_nothing(org, other_org, client_for, in_tenant):
    with in_tenant(other_org):
        services.record(actor=SYSTEM, action="api.globex-only")

    response = client_for(org).get(
        EVENTS,
        {"action": "api.globex-only", "tenant": str(other_org.tenant.public_id)},
        **bearer(org, org.admin),
    )

    assert response.json()["results"] == []


def test_the_list_query_count_is_fixed(org, client_for, logged, django_assert_num_queries):
    client, headers = client_for(org), bearer(org, org.admin)
    client.get(EVENTS, **headers)

    # the credential's user, the page
    with django_assert_num_queries(2):
        response = client.get(EVENTS, {"action": "api.test"}, **headers)
    assert response.status_code == 200


# --- Export --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "content_type"),
    [
        ("json", "application/json; charset=utf-8"),
        ("csv", "text/csv; charset=utf-8"),
        ("cef", "text/plain; charset=utf-8"),
    ],
)
def test_export_streams_each_format(org, client_for, logged, fmt, content_type):
    response = client_for(org).get(
        EXPORT, {"format": fmt, "action": "api.test"}, **bearer(org, org.admin)
    )

    assert isinstance(response, StreamingHttpResponse)
    assert response["Content-Type"] == content_type
    body = b"".join(response.streaming_content).decode()
    if fmt == "json":
        assert [r["resource_id"] for r in json.loads(body)] == ["0", "1", "2", "3", "4"]
    elif fmt == "csv":
        rows = list(csv.reader(io.StringIO(body, newline="")))
        assert [row[8] for row in rows[1:]] == ["0", "1", "2", "3", "4"]
    else:
        assert body.count("\n") == 5 and body.startswith("CEF:0|AgentPlane|AgentPlane|")


def test_export_by_time_range_only_has_that_range(org, client_for, logged):
    params = {
        "format": "json",
        "start": logged[1].occurred_at.isoformat().replace("+00:00", "Z"),
        "end": logged[4].occurred_at.isoformat().replace("+00:00", "Z"),
    }

    response = client_for(org).get(EXPORT, params, **bearer(org, org.admin))

    records = json.loads(b"".join(response.streaming_content))
    assert [r["sequence"] for r in records] == [e.sequence for e in logged[1:4]]


def test_export_never_has_another_organizations_events(org, other_org, client_for, in_tenant):
    with in_tenant(other_org):
        services.record(actor=SYSTEM, action="api.globex-only", details={"m": "GLOBEX"})

    response = client_for(org).get(EXPORT, {"format": "json"}, **bearer(org, org.admin))

    records = json.loads(b"".join(response.streaming_content))
    assert {r["tenant_id"] for r in records} == {str(org.tenant.public_id)}
    assert not [r for r in records if r["action"] == "api.globex-only"]


@pytest.mark.parametrize("params", [{}, {"format": "xml"}, {"format": "csv", "start": "soon"}])
def test_export_bad_parameters_are_a_400_and_record_nothing(org, client_for, in_tenant, params):
    headers = bearer(org, org.admin)
    start = head_of(org, in_tenant)

    response = client_for(org).get(EXPORT, params, **headers)

    assert response.status_code == 400 and error(response)[0] == "invalid"
    with in_tenant(org):
        assert [e.action for e in events_after(start)] == []


def test_export_is_get_only(org, client_for):
    response = client_for(org).post(EXPORT + "?format=csv", **bearer(org, org.admin))

    assert response.status_code == 405


# --- Rate limit ----------------------------------------------------------------------------------


def test_exports_are_rate_limited_per_actor_and_refusals_recorded(
    org, client_for, in_tenant, settings
):
    from django.core.cache import cache

    cache.clear()  # this test's Redis database only: counters from earlier runs
    settings.AUDIT_EXPORT_RATE = "2/m"
    client, headers, owner = client_for(org), bearer(org, org.admin), bearer(org, org.owner)
    start = head_of(org, in_tenant)

    statuses = [
        client.get(EXPORT, {"format": "csv", "action": "x"}, **headers).status_code
        for _ in range(3)
    ]
    refused = client.get(EXPORT, {"format": "csv"}, **headers)

    assert statuses == [200, 200, 429]
    assert error(refused)[0] == "rate_limited" and int(refused["Retry-After"]) >= 1
    other = client.get(EXPORT, {"format": "csv"}, **owner)
    assert other.status_code == 200  # another actor has their own budget
    with in_tenant(org):
        results = [(e.action, e.actor_label, e.result) for e in events_after(start)]
    assert results == [
        ("audit.exported", "admin@acme.test", "success"),
        ("audit.exported", "admin@acme.test", "success"),
        ("audit.exported", "admin@acme.test", "denied"),
        ("audit.exported", "admin@acme.test", "denied"),
        ("audit.exported", "owner@acme.test", "success"),
    ]


def test_exports_fail_closed_when_redis_is_down(org, client_for, in_tenant, settings):
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": "redis://127.0.0.1:1/0",
            "OPTIONS": {"socket_connect_timeout": 0.2, "socket_timeout": 0.2},
        }
    }
    headers = bearer(org, org.admin)
    start = head_of(org, in_tenant)

    response = client_for(org).get(EXPORT, {"format": "csv"}, **headers)

    assert response.status_code == 503 and response["Retry-After"] == "30"
    with in_tenant(org):
        assert events_after(start) == []

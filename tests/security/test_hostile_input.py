"""Hostile JSON over HTTP, on every endpoint family that reads a body: deep nesting, lone
surrogates, non-finite numbers, huge integers, invalid UTF-8. Each is a 400 in the error shape
(never a 500, never a logged traceback) and changes nothing."""

from __future__ import annotations

import json
import logging

import pytest

from agents.models import Agent, ConfigKey
from audit.models import AuditEvent
from core import strictjson
from tenants import context
from tests.credentials.helpers import bearer, error_code, token_pair

DEEP = 100_000
HOSTILE = {
    "deep array": "[" * DEEP + "]" * DEEP,
    "deep object": '{"a":' * DEEP + "1" + "}" * DEEP,
    "deep mixed": '{"a":[' * (DEEP // 2) + "1" + "]}" * (DEEP // 2),
    "nested past the limit": '{"a":' * 70 + "1" + "}" * 70,
    "lone surrogate value": '{"name": "\\ud800"}',
    "lone surrogate key": '{"\\udfff": 1}',
    "lone surrogate in an array": '{"scopes": ["\\ud800"]}',
    "NaN": '{"name": NaN}',
    "Infinity": '{"name": Infinity}',
    "-Infinity": '{"a": [-Infinity]}',
    "overflowing float": '{"name": 1e999999}',
    "overflowing negative float": '{"a": {"b": -1e400}}',
    "huge integer": '{"name": ' + "9" * 5000 + "}",
    "invalid UTF-8": b'{"name": "\xff\xfe"}',
    "not JSON": "{nope",
}

# (method, path, role): every route that parses a JSON body, anonymous sign-in included.
ENDPOINTS = [
    ("post", "/api/v1/auth/token", None),
    ("post", "/api/v1/auth/token/refresh", None),
    ("post", "/api/v1/auth/token/revoke", None),
    ("post", "/api/v1/api-keys/", "owner"),
    ("post", "/api/v1/agents/", "owner"),
    ("put", "/api/v1/config/agents.worker/", "owner"),
    ("post", "/api/v1/tasks/", "owner"),
]


def counts(org) -> tuple[int, int, int]:
    with context.tenant_context(org.tenant):
        return (
            AuditEvent.objects.filter(result="success").count(),
            Agent.objects.count(),
            ConfigKey.objects.count(),
        )


@pytest.mark.parametrize(("method", "path", "role"), ENDPOINTS)
def test_hostile_bodies_are_400s_that_change_nothing(org, client_for, caplog, method, path, role):
    client = client_for(org)
    headers = bearer(token_pair(org, org.user(role)).access) if role else {}
    before = counts(org)
    caplog.set_level(logging.WARNING)
    for name, body in HOSTILE.items():
        response = getattr(client, method)(
            path, data=body, content_type="application/json", **headers
        )
        assert response.status_code == 400, (name, response.content[:200])
        assert error_code(response) == "parse_error", name
    assert counts(org) == before
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


def test_agent_patch_with_hostile_bodies(org, client_for):
    from tests.agents.conftest import make_agent

    with context.tenant_context(org.tenant):
        agent = make_agent(name="Hostile target")
    headers = bearer(token_pair(org, org.owner).access)
    for name, body in HOSTILE.items():
        response = client_for(org).patch(
            f"/api/v1/agents/{agent.pk}/", data=body, content_type="application/json", **headers
        )
        assert response.status_code == 400, name
        assert error_code(response) == "parse_error"


def test_a_task_nested_past_the_value_limit_is_refused(org, client_for):
    """Tasks get the same nesting limit as config values (32), inside the body's own (64)."""
    headers = bearer(token_pair(org, org.owner).access)
    task: dict = {"kind": "echo"}
    for _ in range(strictjson.MAX_VALUE_DEPTH):
        task = {"a": task}
    response = client_for(org).post(
        "/api/v1/tasks/",
        data=json.dumps({"task": task}),
        content_type="application/json",
        **headers,
    )
    assert response.status_code == 400
    assert response.json()["error"]["detail"] == {"task": ["Nested deeper than 32 levels."]}
    fits = {"kind": "echo", "deep": json.loads("[" * 30 + "]" * 30)}
    accepted = client_for(org).post(
        "/api/v1/tasks/",
        data=json.dumps({"task": fits}),
        content_type="application/json",
        **headers,
    )
    assert accepted.status_code == 202


def test_the_decoder_alone():
    for name, body in HOSTILE.items():
        with pytest.raises(strictjson.InvalidJson):
            strictjson.loads(body)
        assert name
    assert strictjson.loads('{"a": [1, 2.5, "\\u00e9", "\\ud83d\\ude00", null, true]}') == {
        "a": [1, 2.5, "é", "😀", None, True]
    }
    assert strictjson.loads("[" * 64 + "]" * 64) is not None
    with pytest.raises(strictjson.InvalidJson, match="deeper than 64"):
        strictjson.loads("[" * 65 + "]" * 65)
    with pytest.raises(strictjson.InvalidJson):
        strictjson.check({"a": float("inf")})
    with pytest.raises(strictjson.InvalidJson):
        strictjson.check(["\udc00"])
    with pytest.raises(strictjson.InvalidJson):
        strictjson.encoded_size({"a": float("nan")})


@pytest.mark.parametrize(
    "url",
    [
        "/api/v1/audit/events/?cursor=%C2%B2",  # "²": str.isdigit() said yes, int() no (a 500)
        "/api/v1/audit/events/?limit=%C2%B2",
        "/api/v1/audit/events/?limit=%D9%A3",  # Arabic-Indic three
        "/api/v1/agents/?search=%00",
        "/api/v1/agents/?page_size=%00",
        "/api/v1/api-keys/?x%00=1",
        "/api/v1/agents/?search=" + "a" * 3000,
    ],
)
def test_hostile_query_values_are_400s(org, client_for, caplog, url):
    headers = bearer(token_pair(org, org.owner).access)
    response = client_for(org).get(url, **headers)
    assert response.status_code == 400, response.content[:200]
    assert error_code(response) == "invalid"
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]

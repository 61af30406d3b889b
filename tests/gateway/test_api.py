"""POST /api/v1/tasks/: roles, credentials, another organization's agent, quota, bad input."""

from __future__ import annotations

import json

import pytest

from audit.models import AuditEvent
from core.actors import Actor
from tenants import context
from tests.agents.conftest import make_agent
from tests.billing.helpers import record_usage

URL = "/api/v1/tasks/"


@pytest.fixture(autouse=True)
def _settings(settings):
    from credentials import keyring

    settings.API_KEY_CREATE_RATE = "100000/h"
    settings.GATEWAY_PUBLISH_RATE_PER_ORGANIZATION = "100000/s"
    keyring.forget()
    yield
    keyring.forget()


def post(client, data, **extra):
    return client.post(URL, data=json.dumps(data), content_type="application/json", **extra)


def task_events(org) -> int:
    with context.tenant_context(org.tenant):
        return AuditEvent.objects.filter(action="task.published", result="success").count()


@pytest.mark.parametrize(
    ("role", "status"),
    [(None, 401), ("viewer", 403), ("member", 202), ("admin", 202), ("owner", 202)],
)
def test_role_matrix(org, client_for, role, status, django_capture_on_commit_callbacks):
    client = client_for(org, org.user(role)) if role else client_for(org)
    client.logout() if role is None else None
    before = task_events(org)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = post(client, {"task": {"kind": "echo", "input": "hi"}})
    assert response.status_code == status
    assert task_events(org) == before + (1 if status == 202 else 0)
    assert len(callbacks) == (1 if status == 202 else 0)


def test_other_organizations_admin_token_is_refused(org, other_org, client_for):
    from credentials import services as credentials

    with context.tenant_context(other_org.tenant):
        pair = credentials.token_pair_issue(actor=Actor.system("t"), user=other_org.admin)
    response = post(
        client_for(org), {"task": {"kind": "echo"}}, HTTP_AUTHORIZATION=f"Bearer {pair.access}"
    )
    assert response.status_code == 401


def test_a_task_reaches_the_agents_task_subject(
    org, client_for, django_capture_on_commit_callbacks, listen
):
    receive = listen(org.tenant, "agents.task")
    with django_capture_on_commit_callbacks(execute=True):
        response = post(client_for(org, org.member), {"task": {"kind": "echo", "input": "hi"}})
    assert response.status_code == 202
    body = response.json()
    assert body["subject"] == "agents.task"
    message = receive()
    assert message["subject"] == "agents.task"
    assert message["tenant"] == str(org.tenant.public_id)
    assert message["data"] == {"kind": "echo", "input": "hi", "id": body["id"]}


def test_a_task_for_one_agent_goes_to_its_subject(
    org, in_tenant, client_for, django_capture_on_commit_callbacks, listen
):
    with in_tenant(org):
        agent = make_agent("Tasked")
    receive = listen(org.tenant, f"agents.{agent.pk}.task")
    with django_capture_on_commit_callbacks(execute=True):
        response = post(client_for(org, org.admin), {"agent": str(agent.pk), "task": {"n": 1}})
    assert response.status_code == 202
    assert response.json()["subject"] == f"agents.{agent.pk}.task"
    assert receive()["data"]["n"] == 1


def test_another_organizations_agent_is_not_found(
    org, other_org, in_tenant, client_for, django_capture_on_commit_callbacks
):
    with in_tenant(other_org):
        theirs = make_agent("Theirs")
    before = task_events(org)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = post(client_for(org, org.admin), {"agent": str(theirs.pk), "task": {}})
    assert response.status_code == 404
    assert (task_events(org), len(callbacks)) == (before, 0)


@pytest.mark.parametrize(
    "body",
    [
        {"task": "echo"},
        {"task": ["echo"]},
        {},
        {"task": {}, "tenant": "x"},
        {"task": {}, "agent": "not-a-uuid"},
        {"task": {"blob": "x" * 70_000}},
    ],
)
def test_bad_input_is_a_400_and_publishes_nothing(
    org, client_for, body, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = post(client_for(org, org.admin), body)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid"
    assert len(callbacks) == 0


def test_past_the_monthly_quota_is_a_429_naming_the_quota(
    org, client_for, django_capture_on_commit_callbacks, listen
):
    from agents.selectors import limits_get

    with context.tenant_context(org.tenant):
        quota = limits_get().messages_per_month
    record_usage(org.tenant, "gateway_messages", quota)
    tasks, alerts = listen(org.tenant, "agents.task"), listen(org.tenant, "usage.alert")
    with django_capture_on_commit_callbacks(execute=True):
        response = post(client_for(org, org.admin), {"task": {}})
    assert response.status_code == 429
    assert response.json()["error"]["code"] == "quota_exceeded"
    assert response.json()["error"]["detail"] == {
        "quota": {"name": "gateway_messages_per_month", "meter": "gateway_messages", "limit": quota}
    }
    assert 1 <= int(response["Retry-After"]) <= 31 * 86400
    # No task goes out; the month's messages were used up without a word: the refusal is the
    # quota's 100% alert (docs/billing.md, "Quotas").
    with pytest.raises(TimeoutError):
        tasks(timeout=0.3)
    alert = alerts()["data"]
    assert (alert["meter"], alert["threshold_percent"], alert["refused"]) == (
        "gateway_messages",
        100,
        True,
    )


def test_an_api_key_needs_the_tasks_publish_scope(org, in_tenant, client_for):
    from credentials import services as credentials

    with in_tenant(org):
        _, without = credentials.api_key_create(
            actor=Actor.for_user(org.admin), name="r", scopes=["agents:read"]
        )
        _, with_scope = credentials.api_key_create(
            actor=Actor.for_user(org.admin), name="p", scopes=["tasks:publish"]
        )
    client = client_for(org)
    refused = post(client, {"task": {}}, HTTP_AUTHORIZATION=f"Api-Key {without}")
    allowed = post(client, {"task": {}}, HTTP_AUTHORIZATION=f"Api-Key {with_scope}")
    assert (refused.status_code, allowed.status_code) == (403, 202)

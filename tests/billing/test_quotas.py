"""Monthly quotas: the hard limit on gateway messages, soft alerts at 80% and 100% once each."""

from __future__ import annotations

import pytest
from django.utils import timezone

from audit.models import AuditEvent
from billing import limits, selectors, services
from tenants import context
from tenants.models import Tenant


@pytest.fixture(autouse=True)
def _fresh():
    from gateway import services as gateway

    limits.forget()
    gateway._limits_cache.clear()
    yield
    gateway._limits_cache.clear()


def _quota(org, messages: int) -> None:
    with context.public_context():
        Tenant.objects.filter(pk=org.tenant.pk).update(messages_per_month_override=messages)


def _task(client):
    return client.post("/api/v1/tasks/", {"task": {}}, content_type="application/json")


def test_soft_alerts_fire_once_per_threshold(
    org, client_for, in_tenant, django_capture_on_commit_callbacks, listen
):
    _quota(org, 10)
    receive = listen(org.tenant, "usage.alert")
    client = client_for(org, org.admin)

    with django_capture_on_commit_callbacks(execute=True):
        statuses = [_task(client).status_code for _ in range(12)]
    first, second = receive(), receive()
    # The counter is rebuilt from the ledger (as after Redis lost it): no alert again.
    services.quota_forget(tenant=org.tenant)
    with django_capture_on_commit_callbacks(execute=True):
        assert _task(client).status_code == 429

    assert statuses == [202] * 10 + [429] * 2
    with in_tenant(org):
        alerts = list(
            AuditEvent.objects.filter(action="usage.alert")
            .order_by("id")
            .values_list("details", flat=True)
        )
    assert [(a["threshold_percent"], a["used"], a["quota"]) for a in alerts] == [
        (80, 8, 10),
        (100, 10, 10),
    ]
    assert first["data"]["threshold_percent"] == 80 and second["data"]["used"] == 10
    assert first["subject"] == "usage.alert" and first["tenant"] == str(org.tenant.public_id)


def test_another_organization_gets_no_alert(org, other_org, client_for, in_tenant):
    _quota(org, 2)
    client = client_for(org, org.admin)
    [_task(client) for _ in range(3)]
    with in_tenant(other_org):
        assert not AuditEvent.objects.filter(action="usage.alert").exists()
    with in_tenant(org):
        assert AuditEvent.objects.filter(action="usage.alert").count() == 2


# Quotas on other meters (the plan's PlanQuota rows) -----------------------------------------


def _plan_quota(org, meter: str, limit: int, *, is_hard: bool):
    from billing.models import PlanQuota
    from core.actors import Actor

    with context.public_context():
        row = PlanQuota.objects.filter(plan_id=org.tenant.plan_id, meter=meter).first()
    row = row or PlanQuota(plan_id=org.tenant.plan_id, meter=meter)
    row.limit, row.is_hard = limit, is_hard
    services.plan_limit_save(actor=Actor.system("tests"), plan_limit=row, fields=["limit"])
    limits.forget()


def _tokens(client, event_id: str, amount: int):
    import json

    event = {
        "specversion": "1.0",
        "id": event_id,
        "source": "rt",
        "type": "llm.tokens",
        "data": {"model": "m", "input_tokens": amount, "output_tokens": 0},
    }
    return client.post(
        "/api/v1/usage/events", data=json.dumps(event), content_type="application/cloudevents+json"
    )


def test_a_hard_token_quota_refuses_the_report_that_would_pass_it_naming_it(
    org, client_for, in_tenant, django_capture_on_commit_callbacks, listen
):
    from tests.credentials.helpers import error_code

    _plan_quota(org, "llm_tokens", 1000, is_hard=True)
    receive = listen(org.tenant, "usage.alert")
    client = client_for(org, org.member)

    with django_capture_on_commit_callbacks(execute=True):
        first = _tokens(client, "a", 800)
        refused = _tokens(client, "b", 201)
        last = _tokens(client, "c", 200)
        after = _tokens(client, "d", 1)

    assert (first.status_code, last.status_code) == (202, 202)
    assert refused.status_code == after.status_code == 429
    assert error_code(refused) == "quota_exceeded"
    assert refused.json()["error"]["detail"] == {
        "quota": {"name": "llm_tokens_per_month", "meter": "llm_tokens", "limit": 1000}
    }
    assert int(refused["Retry-After"]) >= 1
    assert receive()["data"]["threshold_percent"] == 80
    assert receive()["data"]["threshold_percent"] == 100
    summary = {m["meter"]: m for m in client.get("/api/v1/usage/").json()["meters"]}
    assert summary["llm_tokens"] == {**summary["llm_tokens"], "used": 1000, "quota": 1000}


def test_a_hard_api_request_quota_bites_on_every_api_call(org, client_for):
    from tests.credentials.helpers import error_code

    _plan_quota(org, "api_requests", 3, is_hard=True)
    client = client_for(org, org.member)

    statuses = [client.get("/api/v1/agents/").status_code for _ in range(4)]
    refused = client.get("/api/v1/organization/")

    assert statuses == [200, 200, 200, 429]
    assert error_code(refused) == "quota_exceeded"
    assert refused.json()["error"]["detail"]["quota"]["name"] == "api_requests_per_month"


def test_a_soft_tool_run_quota_only_alerts_once_per_threshold(
    org, in_tenant, django_capture_on_commit_callbacks
):
    """Tool runs are metered after they ran (usage_add): never refused, alerted at 80% and
    100% once each, also past the quota."""
    from billing.ledger import Count

    _plan_quota(org, "tool_runs", 5, is_hard=False)
    with django_capture_on_commit_callbacks(execute=True):
        for _ in range(8):
            services.usage_add(tenant=org.tenant, counts=[Count("tool_runs", 1, {"tool": "t"})])

    with in_tenant(org):
        alerts = list(
            AuditEvent.objects.filter(action="usage.alert")
            .order_by("id")
            .values_list("details", flat=True)
        )
    assert [(a["meter"], a["threshold_percent"], a["used"]) for a in alerts] == [
        ("tool_runs", 80, 4),
        ("tool_runs", 100, 5),
    ]
    now = timezone.now()
    assert (
        selectors.meter_total(
            tenant=org.tenant, meter="tool_runs", start=now.replace(day=1, hour=0), end=now
        )
        == 8
    )


def test_a_retried_batch_does_not_spend_a_quota_twice(org, client_for):
    """Duplicates count once in the ledger; the month's counters start again from it."""
    _plan_quota(org, "llm_tokens", 1000, is_hard=True)
    client = client_for(org, org.member)

    first = _tokens(client, "same", 600)
    retried = _tokens(client, "same", 600)
    next_one = _tokens(client, "other", 400)

    assert (first.status_code, retried.status_code, next_one.status_code) == (202, 202, 202)
    assert retried.json()["duplicates"] == 1
    assert _tokens(client, "more", 1).status_code == 429

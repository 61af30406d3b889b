"""Monthly quotas: the hard limit on gateway messages, soft alerts at 80% and 100% once each."""

from __future__ import annotations

import pytest

from audit.models import AuditEvent
from billing import limits, services
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
        assert _task(client).status_code == 409

    assert statuses == [202] * 10 + [409] * 2
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

"""Spend budgets alert like quotas: at 80% and 100% of the month's budget (or at the first
refusal when the spend stops short of it), once per threshold, budget and month, across
processes; as a `usage.alert` audit event and on the organization's `usage.alert` subject."""

from __future__ import annotations

import multiprocessing
from datetime import timedelta

import pytest
from django.utils import timezone

from audit.models import AuditEvent
from billing import limits, pricing, services
from billing.ledger import Count
from core.actors import Actor
from tenants import context, ratelimit
from tests.billing.test_budgets import budget, price
from tests.credentials.helpers import api_key, api_key_header, error_code


@pytest.fixture(autouse=True)
def _fresh():
    limits.forget()
    pricing.forget()
    yield
    limits.forget()
    pricing.forget()


def alerts_of(tenant) -> list[dict]:
    with context.tenant_context(tenant):
        return list(
            AuditEvent.objects.filter(action="usage.alert", resource_type="budget")
            .order_by("id")
            .values_list("details", flat=True)
        )


def test_a_budget_alerts_once_at_80_and_100_percent(
    org, client_for, django_capture_on_commit_callbacks, listen
):
    price("api_requests", "0.01")  # a cent a request: 10 requests spend 0.10
    key, raw = api_key(org, ["agents:read"])
    spent = budget(org, "api_key", key.pk, "0.10")
    receive = listen(org.tenant, "usage.alert")
    client = client_for(org)

    with django_capture_on_commit_callbacks(execute=True):
        statuses = [
            client.get("/api/v1/agents/", **api_key_header(raw)).status_code for _ in range(12)
        ]
    first, second = receive(), receive()
    # Redis lost the month's spend: seeded again from the ledger, it crosses nothing again.
    ratelimit.redis_client().delete(
        services.budget_key(str(org.tenant.public_id), "api_key", str(key.pk), timezone.now())
    )
    with django_capture_on_commit_callbacks(execute=True):
        again = client.get("/api/v1/agents/", **api_key_header(raw))

    assert statuses == [200] * 10 + [429] * 2
    assert error_code(again) == "budget_exceeded"
    alerts = alerts_of(org.tenant)
    assert [(a["threshold_percent"], a["spent"], a["amount"]) for a in alerts] == [
        (80, "0.080000", "0.10"),
        (100, "0.100000", "0.10"),
    ]
    assert alerts[0] == {
        "budget": spent.pk,
        "subject_type": "api_key",
        "subject_id": str(key.pk),
        "threshold_percent": 80,
        "spent": "0.080000",
        "amount": "0.10",
        "currency": "USD",
        "period": timezone.now().strftime("%Y%m"),
    }
    assert first["subject"] == second["subject"] == "usage.alert"
    assert (first["data"]["threshold_percent"], second["data"]["threshold_percent"]) == (80, 100)
    assert first["tenant"] == str(org.tenant.public_id)
    with pytest.raises(TimeoutError):
        receive(timeout=0.3)


def test_a_budget_stopped_short_of_100_percent_alerts_at_its_first_refusal(org, client_for):
    """3 cents a request against 0.10: the third request spends 0.09 (past 80%), the fourth
    would pass the budget: refused, and that is the 100% alert (`refused`), once."""
    price("api_requests", "0.03")
    key, raw = api_key(org, ["agents:read"])
    budget(org, "api_key", key.pk, "0.10")
    client = client_for(org)

    statuses = [client.get("/api/v1/agents/", **api_key_header(raw)).status_code for _ in range(6)]

    assert statuses == [200] * 3 + [429] * 3
    assert [
        (a["threshold_percent"], a["spent"], a.get("refused")) for a in alerts_of(org.tenant)
    ] == [
        (80, "0.090000", None),
        (100, "0.090000", True),
    ]


def test_a_budget_alerts_again_in_the_next_month(org, monkeypatch):
    price("api_requests", "0.01")
    key, _ = api_key(org, ["agents:read"])
    budget(org, "api_key", key.pk, "0.05")
    counts = [Count("api_requests", 1, {"api_key": str(key.pk)})]

    def spend(times: int) -> None:
        for _ in range(times):
            services.request_admit(resource="api", counts=counts)

    with context.tenant_context(org.tenant):
        spend(5)
        now = timezone.now()
        following = (now.replace(day=1) + timedelta(days=32)).replace(day=2, hour=1)
        monkeypatch.setattr(timezone, "now", lambda: following)
        spend(4)

    alerts = alerts_of(org.tenant)
    assert [(a["period"], a["threshold_percent"]) for a in alerts] == [
        (now.strftime("%Y%m"), 80),
        (now.strftime("%Y%m"), 100),
        (following.strftime("%Y%m"), 80),
    ]


def test_another_organizations_spend_never_alerts_this_one(org, other_org, client_for):
    price("api_requests", "0.01")
    key_a, _ = api_key(org, ["agents:read"])
    budget(org, "api_key", key_a.pk, "0.05")
    key_b, raw_b = api_key(other_org, ["agents:read"])
    budget(other_org, "api_key", key_b.pk, "0.05")
    client = client_for(other_org)

    statuses = [
        client.get("/api/v1/agents/", **api_key_header(raw_b)).status_code for _ in range(6)
    ]

    assert statuses == [200] * 5 + [429]
    assert alerts_of(org.tenant) == []
    assert [a["threshold_percent"] for a in alerts_of(other_org.tenant)] == [80, 100]
    with context.tenant_context(org.tenant):
        assert not AuditEvent.objects.filter(action="usage.alert").exists()


def _spend_in_child(tenant, key_id: int, attempts: int, queue) -> None:
    """In a forked process: a connection of its own (the parent's stays the parent's)."""
    from django.db import connections

    for alias in connections:
        connections[alias].connection = None  # forget the parent's socket without closing it
    allowed = 0
    with context.tenant_context(tenant):
        for _ in range(attempts):
            try:
                services.request_admit(
                    resource="api", counts=[Count("api_requests", 1, {"api_key": str(key_id)})]
                )
                allowed += 1
            except Exception as error:  # noqa: BLE001 - only the budget's refusal is expected
                assert getattr(error, "code", None) == "budget_exceeded", error
    connections.close_all()
    queue.put(allowed)


def test_concurrent_requests_crossing_a_threshold_alert_once(scratch_org):
    """A budget of 0.40 at a cent a request, spent by 4 processes at once (200 attempts): 40
    served, and exactly one alert at 80% and one at 100%."""
    from billing.models import Price

    with context.public_context():
        before = list(Price.objects.filter(meter="api_requests").values())
    try:
        _cross_concurrently(scratch_org)
    finally:  # the price is committed here (no test transaction): put the table back
        with context.public_context():
            Price.objects.filter(meter="api_requests").delete()
            Price.objects.bulk_create([Price(**row) for row in before])
        pricing.forget()


def _cross_concurrently(scratch_org) -> None:
    price("api_requests", "0.01")
    key, _ = api_key(scratch_org, ["agents:read"])
    with context.tenant_context(scratch_org.tenant):
        services.budget_create(
            actor=Actor.for_user(scratch_org.admin),
            subject_type="api_key",
            subject_id=str(key.pk),
            amount=__import__("decimal").Decimal("0.40"),
        )
        # Warm this process's caches (forked below); the month's counter is seeded by the first.
        limits.budgets_of(scratch_org.tenant.pk)
        limits.monthly_quotas(scratch_org.tenant)
        pricing.prices()
    processes = multiprocessing.get_context("fork")
    queue = processes.Queue()
    workers = [
        processes.Process(target=_spend_in_child, args=(scratch_org.tenant, key.pk, 50, queue))
        for _ in range(4)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(90)
    allowed = [queue.get(timeout=5) for _ in workers]

    assert sum(allowed) == 40
    assert all(worker.exitcode == 0 for worker in workers)
    assert sorted(a["threshold_percent"] for a in alerts_of(scratch_org.tenant)) == [80, 100]

"""Failed credentials from outside: throttled per client and per organization, and recorded
aggregated, so nobody outside can grow an organization's log one row per request; the
failed-logins rule still fires on the aggregate."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.management import call_command
from django.test import Client
from django.utils import timezone

from audit import failures
from audit.models import Alert, AuditEvent, FailureWindow
from core.actors import Actor
from tenants import context

BAD_KEY = "Api-Key agp_" + "A" * 50


def failed_rows(org, action: str = "auth.failed") -> list[AuditEvent]:
    with context.tenant_context(org.tenant):
        return list(AuditEvent.objects.filter(action=action, result="failed").order_by("sequence"))


def window_counts(org) -> list[int]:
    with context.tenant_context(org.tenant):
        return list(FailureWindow.objects.values_list("count", flat=True))


@pytest.fixture
def limits(settings):
    # Hour windows (for the limit and the aggregation): a loaded machine may take more than the
    # rest of a minute to send the flood, and a window edge would split the counts.
    settings.AUDIT_FAILURE_WINDOW_SECONDS = 3600
    settings.AUTH_FAILURE_RATE_PER_IP = "40/h"
    settings.AUTH_FAILURE_RATE_PER_ORGANIZATION = "100000/m"
    return settings


def test_a_flood_of_bad_keys_is_throttled_and_recorded_in_three_rows(org, limits):
    client = Client(HTTP_HOST=org.host, raise_request_exception=False)
    statuses = []
    for _ in range(60):
        response = client.get("/api/v1/agents/", HTTP_AUTHORIZATION=BAD_KEY)
        statuses.append(response.status_code)
        if response.status_code == 429:
            assert int(response["Retry-After"]) >= 1
            assert response.json()["error"]["code"] == "rate_limited"
    assert statuses[:40] == [401] * 40
    assert set(statuses[40:]) == {429}
    # While the window is open: the first failure and the one reaching the alert threshold.
    rows = failed_rows(org)
    assert [(r.details["count"], r.details["total"]) for r in rows] == [(1, 1), (4, 5)]
    assert {r.ip for r in rows} == {"127.0.0.1"}
    assert window_counts(org) == [40]
    # Once the window has closed: one summary row with the rest, the first and last times.
    with context.tenant_context(org.tenant):
        written = failures.failures_flush(now=timezone.now() + timedelta(hours=2))
        assert FailureWindow.objects.count() == 0
    assert written == 1
    rows = failed_rows(org)
    assert len(rows) == 3
    summary = rows[-1].details
    assert (summary["count"], summary["total"], summary["aggregated"]) == (35, 40, True)
    assert summary["first"] <= summary["last"]
    assert (summary["scheme"], summary["code"]) == ("api_key", "api_key_invalid")
    assert sum(r.details["count"] for r in rows) == 40
    assert "AAAA" not in str([r.details for r in rows])


def test_failures_from_many_addresses_hit_the_organization_limit(org, settings):
    settings.AUTH_FAILURE_RATE_PER_IP = "100000/m"
    settings.AUTH_FAILURE_RATE_PER_ORGANIZATION = "10/m"
    client = Client(HTTP_HOST=org.host, raise_request_exception=False)
    statuses = [
        client.get(
            "/api/v1/agents/", HTTP_AUTHORIZATION=BAD_KEY, REMOTE_ADDR=f"10.0.0.{n}"
        ).status_code
        for n in range(1, 16)
    ]
    assert statuses == [401] * 10 + [429] * 5
    assert len(failed_rows(org)) == 10  # one per source: each address is its own source


def test_the_flood_does_not_touch_another_organization(org, other_org, limits):
    client = Client(HTTP_HOST=org.host, raise_request_exception=False)
    for _ in range(45):
        client.get("/api/v1/agents/", HTTP_AUTHORIZATION=BAD_KEY)
    other = Client(HTTP_HOST=other_org.host, raise_request_exception=False)
    assert other.get("/api/v1/agents/", HTTP_AUTHORIZATION=BAD_KEY).status_code == 401
    assert len(failed_rows(other_org)) == 1


def test_a_valid_credential_is_not_throttled_by_others_failures(org, limits):
    from tests.credentials.helpers import bearer, token_pair

    client = Client(HTTP_HOST=org.host, raise_request_exception=False)
    for _ in range(45):
        client.get("/api/v1/agents/", HTTP_AUTHORIZATION=BAD_KEY)
    good = bearer(token_pair(org, org.owner).access)
    assert client.get("/api/v1/agents/", **good).status_code == 200


def test_bad_credentials_fail_closed_when_redis_is_down(org, settings):
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": "redis://127.0.0.1:1/0",  # nothing listens there
            "OPTIONS": {"socket_connect_timeout": 0.2, "socket_timeout": 0.2},
        }
    }
    client = Client(HTTP_HOST=org.host, raise_request_exception=False)
    response = client.get("/api/v1/agents/", HTTP_AUTHORIZATION=BAD_KEY)
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "rate_limiter_unavailable"
    assert int(response["Retry-After"]) >= 1
    assert failed_rows(org) == []


def test_failed_logins_from_many_addresses_still_raise_the_alert(org, settings):
    settings.API_TOKEN_RATE_PER_IP = "100000/m"
    settings.API_TOKEN_RATE_PER_ACCOUNT = "100000/m"
    import json

    with context.tenant_context(org.tenant):
        before = Alert.objects.filter(rule__code="failed-logins").count()
    client = Client(HTTP_HOST=org.host, raise_request_exception=False)
    for n in range(1, 6):
        response = client.post(
            "/api/v1/auth/token",
            data=json.dumps({"username": "admin@acme.test", "password": "wrong"}),
            content_type="application/json",
            REMOTE_ADDR=f"10.1.0.{n}",
        )
        assert response.status_code == 401
    with context.tenant_context(org.tenant):
        alerts = Alert.objects.filter(rule__code="failed-logins")
        assert alerts.count() == before + 1
        assert alerts.order_by("-pk").first().details["failures"] == 5


def test_a_summary_reaching_the_threshold_raises_the_alert(org):
    """A flood from one address that only the summary row accounts for still alerts."""
    actor = Actor.anonymous()
    with context.tenant_context(org.tenant):
        before = Alert.objects.count()
        for _ in range(3):
            failures.login_failure_record(actor=actor, email="owner@acme.test")
        assert Alert.objects.count() == before
        failures.failures_flush(now=timezone.now() + timedelta(minutes=2))
        # 1 + a summary of 2: 3 failures, below the rule's 5.
        assert Alert.objects.count() == before
        for _ in range(2):
            failures.login_failure_record(actor=actor, email="owner@acme.test")
        failures.failures_flush(now=timezone.now() + timedelta(minutes=2))
        assert Alert.objects.count() == before + 1


def test_the_command_flushes_every_organization(org, other_org):
    actor = Actor.anonymous()
    for target in (org, other_org):
        with context.tenant_context(target.tenant):
            for _ in range(3):
                failures.failure_record(actor=actor, action="auth.failed", details={"code": "x"})
            FailureWindow.objects.update(window_start=timezone.now() - timedelta(minutes=5))
    call_command("audit_flush_failures", verbosity=0)
    for target in (org, other_org):
        assert [r.details["count"] for r in failed_rows(target)] == [1, 2]
        assert window_counts(target) == []

"""Staff admin of billing: temporary limit overrides (expiry, reason, both logs, enforced), the
price table, top consumers across organizations; tenants and non-staff cannot."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.utils import timezone

from audit.models import AuditEvent
from billing import ledger, limits, services
from billing.ledger import Count
from billing.models import LimitOverride, Price
from core.actors import Actor
from tenants import context


@pytest.fixture(autouse=True)
def _fresh():
    limits.forget()
    yield
    limits.forget()


@pytest.fixture
def staff_client(public_client, staff_user):
    with context.public_context():
        public_client.force_login(staff_user)
    return public_client


def _local(moment) -> str:
    return timezone.localtime(moment).strftime("%Y-%m-%d"), timezone.localtime(moment).strftime(
        "%H:%M:%S"
    )


def test_staff_set_a_temporary_limit_that_bites_and_is_in_both_logs(
    staff_client, org, other_org, client_for, in_tenant
):
    day, clock = _local(timezone.now() + timedelta(hours=1))
    response = staff_client.post(
        "/admin/billing/limitoverride/add/",
        {
            "tenant": org.tenant.pk,
            "resource": "api",
            "limit": 2,
            "window_seconds": 60,
            "expires_at_0": day,
            "expires_at_1": clock,
            "reason": "Runaway integration, ticket 42",
        },
    )
    assert response.status_code == 302, response.content

    client = client_for(org, org.member)
    statuses = [client.get("/api/v1/agents/").status_code for _ in range(3)]
    other = client_for(other_org, other_org.member).get("/api/v1/agents/")

    assert statuses == [200, 200, 429]
    assert other.status_code == 200  # another organization keeps its plan's limit
    with context.public_context():
        (platform,) = AuditEvent.objects.filter(action="limit_override.created")
    with in_tenant(org):
        (own,) = AuditEvent.objects.filter(action="limit_override.created")
    assert platform.details["reason"] == own.details["reason"] == "Runaway integration, ticket 42"


def test_an_expired_override_no_longer_applies(org, staff_user, client_for):
    override = services.limit_override_create(
        actor=Actor.for_user(staff_user),
        tenant=org.tenant,
        resource="api",
        limit=1,
        window_seconds=60,
        expires_at=timezone.now() + timedelta(hours=1),
        reason="test",
    )
    with context.public_context():
        LimitOverride.objects.filter(pk=override.pk).update(
            expires_at=timezone.now() - timedelta(seconds=1)
        )
    limits.forget()
    client = client_for(org, org.member)
    assert [client.get("/api/v1/agents/").status_code for _ in range(3)] == [200] * 3


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"reason": " "}, "reason"),
        ({"expires_at": "past"}, "expires_at"),
        ({"expires_at": "far"}, "expires_at"),
        ({"resource": "everything"}, "resource"),
        ({"window_seconds": 0}, "window_seconds"),
    ],
)
def test_bad_overrides_are_refused(org, staff_user, change, field):
    values = {
        "resource": "api",
        "limit": 5,
        "window_seconds": 60,
        "expires_at": timezone.now() + timedelta(hours=1),
        "reason": "why",
        **change,
    }
    if values["expires_at"] == "past":
        values["expires_at"] = timezone.now() - timedelta(minutes=1)
    if values["expires_at"] == "far":
        values["expires_at"] = timezone.now() + timedelta(days=365)
    with pytest.raises(ValidationError) as refused:
        services.limit_override_create(
            actor=Actor.for_user(staff_user), tenant=org.tenant, **values
        )
    assert field in refused.value.message_dict
    with context.public_context():
        assert not LimitOverride.objects.exists()


def test_organization_users_cannot_override_limits_or_prices(org):
    with pytest.raises(PermissionDenied):
        services.limit_override_create(
            actor=Actor.for_user(org.owner),
            tenant=org.tenant,
            resource="api",
            limit=10**6,
            window_seconds=60,
            expires_at=timezone.now() + timedelta(hours=1),
            reason="more please",
        )
    with pytest.raises(PermissionDenied):
        services.price_save(
            actor=Actor.for_user(org.owner),
            price=Price(meter="llm_tokens", model="x", unit_price=0),
            fields=["unit_price"],
        )


def test_staff_edit_the_price_table_through_the_service(staff_client):
    response = staff_client.post(
        "/admin/billing/price/add/",
        {
            "meter": "llm_tokens",
            "model": "gpt-big",
            "per_units": 1000,
            "unit_price": "0.030000",
            "currency": "USD",
        },
    )
    assert response.status_code == 302
    with context.public_context():
        assert Price.objects.get(model="gpt-big").unit_price * 1000 == 30
        assert AuditEvent.objects.filter(action="price.created").count() == 1


def test_top_consumers_across_organizations(staff_client, org, other_org):
    now = timezone.now()
    ledger.add_directly(org.tenant.pk, [Count("api_requests", 40)], now)
    ledger.add_directly(other_org.tenant.pk, [Count("api_requests", 90)], now)

    page = staff_client.get("/admin/billing/usagebucket/top/", {"meter": "api_requests"})

    rows = list(page.context["rows"])
    assert [(r["tenant__slug"], r["total"]) for r in rows][:2] == [("globex", 90), ("acme", 40)]
    assert list(page.context["per_plan"])[0]["total"] == 130


def test_tenant_users_cannot_open_the_billing_admin(org, client_for):
    response = client_for(org, org.owner).get("/admin/billing/usagebucket/top/")
    assert response.status_code == 404

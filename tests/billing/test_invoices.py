"""Invoices from the ledger (Decimal money, the plan fee prorated across plan changes, closed
months unchanged), the owner's plan change, the invoices API and the Billing page."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.core.management import call_command

from audit.models import AuditEvent
from billing import invoicing, ledger, limits
from billing.ledger import Count
from billing.models import Invoice, PlanChange
from core.actors import Actor
from organizations import services as organizations
from tenants import context
from tenants.models import Plan, Tenant
from tests.credentials.helpers import api_key, api_key_header

SYSTEM = Actor.system("tests")
OCTOBER = datetime(2026, 10, 1, tzinfo=UTC)
MID_OCTOBER = datetime(2026, 10, 16, tzinfo=UTC)  # 15 of October's 31 days before it


@pytest.fixture(autouse=True)
def _fresh():
    limits.forget()


@pytest.fixture
def october(org):
    """Acme existed since September on Team, moved to Enterprise on October 16th, and used
    10,000 messages before the move, 4,000 after, and 50,000 LLM tokens."""
    tenant = org.tenant
    enterprise = Plan.objects.get(slug="enterprise")
    with context.public_context():
        Tenant.objects.filter(pk=tenant.pk).update(created_at=datetime(2026, 9, 15, tzinfo=UTC))
        PlanChange.objects.filter(tenant_id=tenant.pk).update(at=datetime(2026, 9, 15, tzinfo=UTC))
        tenant.refresh_from_db()
        invoicing.plan_change_record(
            tenant=tenant, plan=enterprise, changed_by="owner", at=MID_OCTOBER
        )
    ledger.add_directly(
        tenant.pk,
        [
            Count("gateway_messages", 10_000, {}, datetime(2026, 10, 5, 10, tzinfo=UTC)),
            Count("gateway_messages", 4_000, {}, datetime(2026, 10, 20, 10, tzinfo=UTC)),
            Count("llm_tokens", 50_000, {"model": "gpt-x"}, datetime(2026, 10, 7, tzinfo=UTC)),
            Count("gateway_messages", 999, {}, datetime(2026, 11, 1, 0, tzinfo=UTC)),  # November
        ],
        OCTOBER,
    )
    return tenant


def test_an_invoice_prorates_the_plan_and_prices_the_ledger(october):
    (invoice,) = [
        i
        for i in invoicing.close_billing_period(actor=SYSTEM, year=2026, month=10)
        if i.tenant_id == october.pk
    ]

    lines = [
        (line.description, line.quantity, line.unit_price, line.amount)
        for line in invoice.lines.all()
    ]
    assert invoice.number == f"INV-202610-{october.pk:05d}"
    assert invoice.currency == "USD"
    assert lines == [
        ("Team plan (Oct 01 – Oct 16)", Decimal("0.483871"), Decimal("499"), Decimal("241.45")),
        (
            "Enterprise plan (Oct 16 – Nov 01)",
            Decimal("0.516129"),
            Decimal("4999"),
            Decimal("2580.13"),
        ),
        ("Gateway messages (Team)", Decimal(10_000), Decimal("0.00005"), Decimal("0.50")),
        ("Gateway messages (Enterprise)", Decimal(4_000), Decimal("0.00002"), Decimal("0.08")),
        ("LLM tokens: gpt-x", Decimal(50_000), Decimal("0.000002"), Decimal("0.10")),
    ]
    assert invoice.total == Decimal("2822.26")
    assert isinstance(invoice.total, Decimal)
    with context.tenant_context(october):
        assert AuditEvent.objects.filter(action="invoice.issued", resource_id=invoice.number)


def test_a_closed_invoice_never_changes(october):
    first = invoicing.invoice_close(actor=SYSTEM, tenant=october, year=2026, month=10)
    ledger.add_directly(
        october.pk, [Count("llm_tokens", 10**9, {"model": "gpt-x"}, OCTOBER)], OCTOBER
    )
    again = invoicing.invoice_close(actor=SYSTEM, tenant=october, year=2026, month=10)

    assert again.pk == first.pk and again.total == first.total
    with context.public_context():
        assert Invoice.objects.filter(tenant_id=october.pk).count() == 1


def test_a_month_that_is_not_over_is_not_closed(org):
    with pytest.raises(ValidationError):
        invoicing.invoice_close(actor=SYSTEM, tenant=org.tenant, year=2099, month=1)
    with pytest.raises(Exception, match="platform"):
        invoicing.invoice_close(
            actor=Actor.for_user(org.owner), tenant=org.tenant, year=2026, month=1
        )


def test_the_command_closes_last_month(october, capsys):
    call_command("close_billing_period", "--month", "2026-10")
    out = capsys.readouterr().out
    assert f"INV-202610-{october.pk:05d}  2822.26 USD" in out


def test_owners_read_invoices_over_the_api_and_no_one_else(october, org, other_org, client_for):
    invoice = invoicing.invoice_close(actor=SYSTEM, tenant=october, year=2026, month=10)
    owner = client_for(org, org.owner)

    listed = owner.get("/api/v1/invoices/").json()
    one = owner.get(f"/api/v1/invoices/{invoice.number}").json()

    assert [i["number"] for i in listed] == [invoice.number]
    assert one["total"] == "2822.26" and one["lines"][0]["amount"] == "241.45"
    assert client_for(org, org.admin).get("/api/v1/invoices/").status_code == 403
    other = client_for(other_org, other_org.owner)
    assert other.get("/api/v1/invoices/").json() == []
    assert other.get(f"/api/v1/invoices/{invoice.number}").status_code == 404
    assert other.get(f"/billing/invoices/{invoice.number}").status_code == 404
    _, raw = api_key(org, ["usage:read"])
    assert owner.get("/api/v1/invoices/", **api_key_header(raw)).status_code == 403


def test_the_billing_page_lists_plans_and_invoices(october, org, client_for):
    invoice = invoicing.invoice_close(actor=SYSTEM, tenant=october, year=2026, month=10)
    owner = client_for(org, org.owner)

    page = owner.get("/billing/")
    printable = owner.get(f"/billing/invoices/{invoice.number}")
    as_json = owner.get(f"/billing/invoices/{invoice.number}", {"format": "json"})

    html = page.content.decode()
    assert page.status_code == 200
    assert invoice.number in html and "Move to Free" in html
    assert printable.status_code == 200 and "2822.26 USD" in printable.content.decode()
    assert as_json.json()["number"] == invoice.number
    assert client_for(org, org.member).get("/billing/").status_code == 403


# The owner's plan change ----------------------------------------------------------------------


def test_an_upgrade_is_recorded_in_both_logs_and_for_the_invoice(org, client_for, in_tenant):
    response = client_for(org, org.owner).post("/billing/plan", {"plan": "enterprise"})

    assert response.status_code == 302
    with context.public_context():
        tenant = Tenant.objects.select_related("plan").get(pk=org.tenant.pk)
        changes = list(PlanChange.objects.filter(tenant_id=tenant.pk).select_related("plan"))
        platform = AuditEvent.objects.filter(action="organization.plan_changed")
        assert platform.count() == 1
    assert tenant.plan.slug == "enterprise"
    assert [c.plan.slug for c in changes] == ["team", "enterprise"]
    with in_tenant(org):
        (event,) = AuditEvent.objects.filter(action="organization.plan_changed")
    assert event.details["plan"] == {"from": "team", "to": "enterprise"}


def test_a_downgrade_that_usage_exceeds_is_refused_naming_each_limit(org, in_tenant):
    from agents import services as agents
    from tests.agents.conftest import make_agent

    free = Plan.objects.get(slug="free")
    with in_tenant(org):
        for number in range(free.max_agents + 1):
            make_agent(f"agent {number}")
        for number in range(free.max_instances + 1):
            agents.instance_request(actor=SYSTEM, agent_id=make_agent(f"busy {number}").pk)
        with pytest.raises(ValidationError) as refused:
            organizations.plan_change(actor=Actor.for_user(org.owner), plan_slug="free")
        denied = AuditEvent.objects.get(action="organization.plan_changed", result="denied")

    problems = refused.value.message_dict["plan"]
    assert any(p.startswith("agents:") for p in problems)
    assert any(p.startswith("running instances:") for p in problems)
    assert "Free plan allows" in denied.details["reason"]
    with context.public_context():
        assert Tenant.objects.get(pk=org.tenant.pk).plan.slug == "team"


def test_only_the_owner_changes_the_plan(org, client_for):
    response = client_for(org, org.admin).post("/billing/plan", {"plan": "enterprise"})
    assert response.status_code == 403
    with context.public_context():
        assert Tenant.objects.get(pk=org.tenant.pk).plan.slug == "team"
    with pytest.raises(ValidationError):
        organizations.plan_change(actor=Actor.for_user(org.owner), plan_slug="nope")

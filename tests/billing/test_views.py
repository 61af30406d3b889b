"""The Usage page and its downloads: the ledger's numbers, per organization, for readers only."""

from __future__ import annotations

import csv
import io
import json

from django.utils import timezone

from billing import limits
from tenants import context
from tests.billing.test_ledger import ONE, send, tokens


def setup_function():
    limits.forget()


def test_the_usage_page_shows_the_month_and_a_chart_of_one_meter(org, client_for):
    client = client_for(org, org.viewer)
    send(client_for(org, org.member), tokens("1", model="m-a", inp=3, out=4), ONE)

    page = client.get("/usage/", {"meter": "llm_tokens", "group_by": "model"})

    assert page.status_code == 200
    summary = {item["meter"].slug: item for item in page.context["summary"]}
    assert summary["llm_tokens"]["used"] == 7
    with context.public_context():
        assert summary["gateway_messages"]["quota"] == org.tenant.plan.messages_per_month
    chart = page.context["chart"]
    assert len(chart["labels"]) == 7 and chart["values"][-1] == 7
    assert chart["groups"] == ["m-a"] and chart["grouped"][-1] == {"m-a": 7}
    html = page.content.decode()
    assert 'id="usage-data"' in html and "vendor/chartjs/chart.umd.min.js" in html
    assert '<a href="/usage/"' in html  # in the navigation


def test_the_downloads_carry_the_same_numbers(org, client_for):
    client = client_for(org, org.member)
    send(client, tokens("1", inp=3, out=4), ONE)
    query = {"meter": "llm_tokens", "granularity": "hour", "group_by": "direction"}

    as_csv = client.get("/usage/download", {**query, "format": "csv"})
    as_json = client.get("/usage/download", {**query, "format": "json"})

    rows = list(csv.DictReader(io.StringIO(as_csv.content.decode())))
    assert as_csv["Content-Type"] == "text/csv"
    assert rows[-1]["value"] == "7" and (rows[-1]["input"], rows[-1]["output"]) == ("3", "4")
    body = json.loads(as_json.content)
    assert body["total"] == 7 and body["buckets"][-1]["groups"] == {"input": 3, "output": 4}
    assert len(rows) == len(body["buckets"]) > 24 * 6


def test_bad_ranges_are_shown_not_raised(org, client_for):
    client = client_for(org, org.viewer)
    page = client.get("/usage/", {"start": "last week", "end": "2026-13-01"})
    assert page.status_code == 200
    assert set(page.context["errors"]) == {"start", "end"}
    long = client.get("/usage/", {"start": "2020-01-01", "granularity": "hour"})
    assert "end" in long.context["errors"]
    assert client.get("/usage/download", {"start": "x"}).status_code == 400


def test_anonymous_visitors_sign_in_first(org, client_for):
    response = client_for(org).get("/usage/")
    assert response.status_code == 302 and "/login/" in response["Location"]


def test_another_organizations_usage_is_not_shown(org, other_org, client_for):
    send(client_for(org, org.member), tokens("1", model="acme-secret", inp=5, out=5), ONE)
    page = client_for(other_org, other_org.owner).get(
        "/usage/", {"meter": "llm_tokens", "group_by": "model"}
    )
    assert page.context["report"].total == 0
    assert "acme-secret" not in page.content.decode()
    download = client_for(other_org, other_org.owner).get(
        "/usage/download", {"meter": "llm_tokens", "group_by": "model", "format": "csv"}
    )
    assert "acme-secret" not in download.content.decode()


def test_the_usage_page_shows_cost_so_far_and_projected_per_key_and_agent(org, client_for):
    from decimal import Decimal

    from billing import pricing, selectors
    from tests.billing.test_budgets import budget, make_agent, post_events, price, tokens_event
    from tests.credentials.helpers import api_key

    pricing.forget()
    price("llm_tokens", "0.002", per_units=1000)
    key, raw = api_key(org, ["usage:report"], name="runtime key")
    agent = make_agent(org, name="Summarizer")
    budget(org, "api_key", key.pk, "1.00")
    post_events(client_for(org), raw, [tokens_event("1", 5000, agentid=str(agent.pk))])

    page = client_for(org, org.viewer).get("/usage/")

    costs = page.context["costs"]
    _, elapsed = selectors.month_progress(timezone.now())
    keys, agents = costs["groups"]
    (key_row,) = keys["rows"]
    (agent_row,) = agents["rows"]
    assert (key_row["name"], key_row["so_far"]) == ("runtime key", "0.0100")
    assert (agent_row["name"], agent_row["so_far"]) == ("Summarizer", "0.0100")
    assert key_row["budget"].percent == 1 and key_row["budget_display"] == "1.00"
    assert costs["so_far"] == "0.0100 USD"
    projected = Decimal(key_row["projected"])
    assert abs(projected - Decimal("0.01") / elapsed) < Decimal("0.0001")
    html = page.content.decode()
    assert "Cost this month" in html and "runtime key" in html
    assert 'action="/usage/budgets"' not in html  # viewers see budgets, admins set them
    pricing.forget()


def test_admins_set_change_and_remove_a_budget_on_the_usage_page(org, client_for, in_tenant):
    from billing.models import Budget
    from tests.credentials.helpers import api_key

    key, _ = api_key(org, ["agents:read"], name="ci")
    admin = client_for(org, org.admin)
    subject = f"api_key:{key.pk}"

    form = admin.get("/usage/").content.decode()
    created = admin.post("/usage/budgets", {"subject": subject, "amount": "12.50"})
    changed = admin.post("/usage/budgets", {"subject": subject, "amount": "20"})
    refused = admin.post("/usage/budgets", {"subject": subject, "amount": "lots"}, follow=True)
    with context.public_context():
        amount = Budget.objects.get(tenant_id=org.tenant.pk).amount
    removed = admin.post("/usage/budgets", {"subject": subject, "remove": "1"})
    nothing = admin.post("/usage/budgets", {"subject": subject, "remove": "1"}, follow=True)
    member = client_for(org, org.member).post("/usage/budgets", {"subject": subject, "amount": "1"})

    assert f'value="{subject}"' in form
    assert created.status_code == changed.status_code == removed.status_code == 302
    assert str(amount) == "20.00"
    assert "A decimal amount" in refused.content.decode()
    assert "has no budget" in nothing.content.decode()
    assert member.status_code == 403
    with context.public_context():
        assert not Budget.objects.filter(tenant_id=org.tenant.pk).exists()
    with in_tenant(org):
        from audit.models import AuditEvent

        actions = list(
            AuditEvent.objects.filter(action__startswith="budget.")
            .order_by("id")
            .values_list("action", flat=True)
        )
    assert actions == ["budget.created", "budget.updated", "budget.deleted"]


def test_the_dashboard_shows_the_effective_api_limit_with_a_staff_override(org, client_for):
    from datetime import timedelta

    from billing import services
    from core.actors import Actor

    services.limit_override_create(
        actor=Actor.system("staff"),
        tenant=org.tenant,
        resource="api",
        limit=1234,
        window_seconds=60,
        expires_at=timezone.now() + timedelta(days=1),
        reason="load test",
    )

    page = client_for(org, org.viewer).get("/")

    assert ("API requests per minute", "1,234") in page.context["limits"]

"""The Usage page and its downloads: the ledger's numbers, per organization, for readers only."""

from __future__ import annotations

import csv
import io
import json

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

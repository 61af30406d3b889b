"""A real browser opens the Usage page: the chart is drawn from the ledger, at desktop and phone
widths."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings

from tests import live
from tests.conftest import PASSWORD

pytestmark = pytest.mark.e2e

PORTS = range(9150, 9190)
ARTIFACTS = Path(settings.BASE_DIR) / "test-artifacts" / "e2e-usage"


@pytest.fixture
def used_org(scratch_org):
    from django.contrib.auth.hashers import PBKDF2PasswordHasher
    from django.utils import timezone

    from accounts.models import User
    from billing import ledger
    from billing.ledger import Count
    from tenants import context

    hasher = PBKDF2PasswordHasher()
    with context.tenant_context(scratch_org.tenant):
        User.objects.filter(pk=scratch_org.member.pk).update(
            password=hasher.encode(PASSWORD, hasher.salt())
        )
    now = timezone.now()
    counts = []
    for day in range(7):
        for model, share in (("large", 3), ("small", 1)):
            at = now - timezone.timedelta(days=day)
            counts.append(Count("llm_tokens", 1000 * share * (day + 1), {"model": model}, at))
    from decimal import Decimal

    from billing import services
    from core.actors import Actor
    from credentials import services as credentials

    with context.tenant_context(scratch_org.tenant):
        admin = Actor.for_user(scratch_org.admin)
        key, _ = credentials.api_key_create(
            actor=admin, name="nightly runtime", scopes=["usage:report"]
        )
        services.budget_create(
            actor=admin, subject_type="api_key", subject_id=str(key.pk), amount=Decimal("0.05")
        )
    # The starting price table: 0.002 USD per thousand tokens, so 0.04 USD of a 0.05 budget.
    counts.append(Count("llm_tokens", 20_000, {"model": "small", "api_key": str(key.pk)}, now))
    ledger.add_directly(scratch_org.tenant.pk, counts, now)
    return scratch_org


@pytest.fixture
def server(used_org) -> Iterator[live.Server]:
    live.require_browser()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with live.runserver(
        PORTS, log=ARTIFACTS / "server.log", ready_host=used_org.tenant.host, ready_path="/login/"
    ) as served:
        yield served


def test_the_usage_page_draws_its_chart(server, used_org):
    from playwright.sync_api import expect, sync_playwright

    slug = used_org.tenant.slug
    with sync_playwright() as playwright:
        browser = live.chromium(playwright)
        try:
            for name, viewport in (
                ("desktop", {"width": 1280, "height": 900}),
                ("phone", {"width": 390, "height": 844}),
            ):
                page = browser.new_context(viewport=viewport).new_page()
                page.set_default_timeout(20_000)
                errors: list[str] = []
                page.on("pageerror", lambda error, errors=errors: errors.append(str(error)))
                page.goto(server.url(slug, "/login/"))
                page.fill("input[name=username]", used_org.member.email)
                page.fill("input[name=password]", PASSWORD)
                page.click("form button[type=submit]")
                page.wait_for_url(server.url(slug, "/"))
                page.goto(server.url(slug, "/usage/?meter=llm_tokens&group_by=model"))
                expect(page.locator("canvas#usage-chart")).to_have_attribute("data-drawn", "true")
                expect(page.locator("[data-total]")).to_have_text(f"{28000 * 4 + 20000:,}")
                key_costs = page.locator('[data-costs-of="api_key"] tbody tr')
                expect(key_costs).to_have_count(1)
                expect(key_costs).to_contain_text("nightly runtime")
                expect(key_costs).to_contain_text("0.0400")
                expect(key_costs).to_contain_text("80%")
                expect(page.locator('[data-meter="llm_tokens"] .meter-value')).to_contain_text(
                    "tokens"
                )
                page.screenshot(path=str(ARTIFACTS / f"usage-{name}.png"), full_page=True)
                assert errors == []
        finally:
            browser.close()

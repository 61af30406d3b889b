"""A real browser opens the Usage and Billing pages of an organization with staff's temporary
limits and this month's alerts (a budget at 80%, a quota at 80%), at desktop and phone widths."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from django.conf import settings

from tests import live
from tests.conftest import PASSWORD

pytestmark = pytest.mark.e2e

PORTS = range(9190, 9230)
ARTIFACTS = Path(settings.BASE_DIR) / "test-artifacts" / "e2e-limits"


@pytest.fixture
def limited_org(scratch_org):
    from django.contrib.auth.hashers import PBKDF2PasswordHasher
    from django.utils import timezone

    from accounts.models import User
    from billing import limits, services
    from billing.ledger import Count
    from core.actors import Actor
    from credentials import services as credentials
    from tenants import context

    hasher = PBKDF2PasswordHasher()
    with context.tenant_context(scratch_org.tenant):
        User.objects.filter(pk__in=[scratch_org.owner.pk, scratch_org.admin.pk]).update(
            password=hasher.encode(PASSWORD, hasher.salt())
        )
    staff = Actor.system("staff")
    expiry = timezone.now() + timedelta(days=3)
    services.limit_override_create(
        actor=staff,
        tenant=scratch_org.tenant,
        resource="api",
        limit=1200,
        window_seconds=60,
        expires_at=expiry,
        reason="Launch week, ticket 81",
    )
    services.limit_override_create(
        actor=staff,
        tenant=scratch_org.tenant,
        meter="tool_runs",
        limit=100,
        expires_at=expiry,
        reason="Trial of the batch tools",
    )
    limits.forget()
    with context.tenant_context(scratch_org.tenant):
        admin = Actor.for_user(scratch_org.admin)
        key, _ = credentials.api_key_create(
            actor=admin, name="nightly runtime", scopes=["usage:report"]
        )
        services.budget_create(
            actor=admin, subject_type="api_key", subject_id=str(key.pk), amount=Decimal("0.05")
        )
        # 0.002 USD per thousand tokens: 0.04 USD of the 0.05 budget, the 80% alert.
        services.request_admit(
            resource="usage_events",
            counts=[Count("llm_tokens", 20_000, {"model": "small", "api_key": str(key.pk)})],
        )
    # 85 of the temporary 100 tool runs: the quota's 80% alert.
    services.usage_add(tenant=scratch_org.tenant, counts=[Count("tool_runs", 85, {"tool": "t"})])
    return scratch_org


@pytest.fixture
def server(limited_org) -> Iterator[live.Server]:
    live.require_browser()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with live.runserver(
        PORTS,
        log=ARTIFACTS / "server.log",
        ready_host=limited_org.tenant.host,
        ready_path="/login/",
    ) as served:
        yield served


def test_the_usage_and_billing_pages_show_temporary_limits_and_alerts(server, limited_org):
    from playwright.sync_api import expect, sync_playwright

    slug = limited_org.tenant.slug
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
                page.fill("input[name=username]", limited_org.owner.email)
                page.fill("input[name=password]", PASSWORD)
                page.click("form button[type=submit]")
                page.wait_for_url(server.url(slug, "/"))

                page.goto(server.url(slug, "/usage/"))
                alerts = page.locator("[data-alerts] tbody tr")
                expect(alerts).to_have_count(2)
                expect(alerts.first).to_contain_text("80%")
                expect(page.locator("[data-alerts]")).to_contain_text("nightly runtime")
                expect(page.locator("[data-alerts]")).to_contain_text("Quota on tool_runs")
                overrides = page.locator("[data-overrides] tbody tr")
                expect(overrides).to_have_count(2)
                expect(page.locator('[data-override="api"]')).to_contain_text("1,200 a minute")
                expect(page.locator('[data-override="tool_runs"]')).to_contain_text("100 a month")
                expect(page.locator('[data-meter="tool_runs"] [data-temporary]')).to_be_visible()
                page.screenshot(path=str(ARTIFACTS / f"usage-{name}.png"), full_page=True)

                page.goto(server.url(slug, "/billing/"))
                expect(page.locator("[data-overrides] tbody tr")).to_have_count(2)
                expect(page.locator("[data-overrides]")).to_contain_text("Launch week, ticket 81")
                page.screenshot(path=str(ARTIFACTS / f"billing-{name}.png"), full_page=True)
                assert errors == []
        finally:
            browser.close()

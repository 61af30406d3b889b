"""The agent page's scaling card in a real browser, at 1280 and 390 px: a decision taken by the
autoscaler elsewhere appears without a reload (over the gateway, on the real Redis), an admin
edits the policy, and axe-core finds nothing serious. Screenshots of the card go to
test-artifacts/e2e-scaling/ (and to $SCREENSHOTS_DIR when set, as docs/screenshots/ has them)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from django.conf import settings

from tests import live
from tests.conftest import PASSWORD
from tests.e2e.test_portal_pages import check, elsewhere, open_page

pytestmark = pytest.mark.e2e

PORTS = range(8450, 8470)
ARTIFACTS = Path(settings.BASE_DIR) / "test-artifacts" / "e2e-scaling"


def card_shot(card, name: str) -> None:
    folders = [ARTIFACTS]
    if os.environ.get("SCREENSHOTS_DIR"):
        folders.append(Path(settings.BASE_DIR) / os.environ["SCREENSHOTS_DIR"])
    for folder in folders:
        card.screenshot(path=str(folder / name))


@pytest.fixture
def hot_org(scratch_org):
    """A committed organization with an agent whose two running instances are busy, under an
    enabled policy; and a pool with room for one more instance only."""
    from django.contrib.auth.hashers import PBKDF2PasswordHasher

    from accounts.models import User
    from agents import services as agent_services
    from core.actors import Actor
    from tenants import context
    from tests.autoscaler.conftest import running_agent

    hasher = PBKDF2PasswordHasher()
    agent_services.organization_limits_set(
        actor=Actor.system("e2e"), tenant=scratch_org.tenant, overrides={"max_instances": 3}
    )
    with context.tenant_context(scratch_org.tenant):
        User.objects.filter(pk=scratch_org.admin.pk).update(
            password=hasher.encode(PASSWORD, hasher.salt())
        )
        scratch_org.agent, _ = running_agent("Support triage", instances=2, cpu=[91, 88, 94])
    return scratch_org


def sign_in(page, base: str, email: str) -> None:
    page.set_default_timeout(20_000)
    page.goto(f"{base}/login/")
    page.fill("input[name=username]", email)
    page.fill("input[name=password]", PASSWORD)
    page.click(".panel button[type=submit]")
    page.wait_for_url(f"{base}/")


def autoscale(tenant) -> list:
    from autoscaler import services
    from core.actors import Actor
    from tenants import context

    with context.tenant_context(tenant):
        return services.organization_autoscale(actor=Actor.system("autoscaler"))


def test_the_scaling_card_follows_the_autoscaler_and_its_policy_is_edited(hot_org):
    from playwright.sync_api import expect, sync_playwright

    live.require_browser()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    port = live.free_port(PORTS)
    base = f"http://{hot_org.tenant.host}:{port}"
    agent_page = f"{base}/agents/{hot_org.agent.pk}/"
    problems: list[str] = []
    with (ARTIFACTS / "server.log").open("w") as log:
        server = live.uvicorn(port, log=log, PORTAL_PORT=str(port), DEBUG="1")
        try:
            with sync_playwright() as playwright:
                browser = live.chromium(playwright)
                try:
                    context, page = open_page(
                        browser, problems, viewport={"width": 1280, "height": 900}
                    )
                    sign_in(page, base, hot_org.admin.email)
                    page.goto(agent_page)
                    expect(page.locator("body[data-live-ready]")).to_have_count(1)
                    card = page.locator("[data-scaling-card]")
                    expect(card.locator("[data-scaling-enabled]")).to_have_text("On")
                    expect(card).to_contain_text("Scaling up to 3 at the next pass")
                    expect(card).to_contain_text("No decision yet.")

                    # The autoscaler runs elsewhere: the decision shows without a reload.
                    [decision] = elsewhere(autoscale, hot_org.tenant)
                    assert (decision.from_count, decision.to_count) == (2, 3)
                    row = card.locator('li[data-decision="up"]')
                    expect(row).to_contain_text("2 → 3")
                    expect(row).to_contain_text("CPU 88% or more (≥ 75) for 3 min")
                    expect(card).to_contain_text("3 instances (1 pending)")
                    check(page, "agent-scaling-card", "desktop", problems, shots=[ARTIFACTS])
                    card_shot(card, "agent-scaling-desktop.png")

                    # An admin edits the policy; the card shows it.
                    card.locator("[data-edit-scaling]").click()
                    page.wait_for_url(f"{agent_page}scaling/")
                    check(page, "agent-scaling-form", "desktop", problems, shots=[ARTIFACTS])
                    page.fill("input[name=max_instances]", "2")
                    page.fill("input[name=min_instances]", "3")
                    page.click("[data-policy-form] button[type=submit]")
                    expect(page.locator("[data-error-summary]")).to_be_focused()
                    expect(page.locator("[data-error-summary]")).to_contain_text(
                        "Maximum instances: At least the minimum."
                    )
                    page.fill("input[name=min_instances]", "1")
                    page.fill("input[name=max_instances]", "6")
                    page.fill("input[name=response_up]", "1500")
                    page.fill("input[name=response_down]", "200")
                    page.click("[data-policy-form] button[type=submit]")
                    page.wait_for_url(agent_page)
                    expect(card).to_contain_text("Between 1 and 6 instances")
                    expect(card).to_contain_text("Response time (ms): up at 1500, down at 200")
                    context.close()

                    context, page = open_page(
                        browser, problems, viewport={"width": 390, "height": 900}
                    )
                    sign_in(page, base, hot_org.admin.email)
                    page.goto(agent_page)
                    card = page.locator("[data-scaling-card]")
                    expect(card.locator('li[data-decision="up"]')).to_have_count(1)
                    check(page, "agent-scaling-card", "phone", problems, shots=[ARTIFACTS])
                    card_shot(card, "agent-scaling-phone.png")
                    page.goto(f"{agent_page}scaling/")
                    check(page, "agent-scaling-form", "phone", problems, shots=[ARTIFACTS])
                    context.close()
                finally:
                    browser.close()
        finally:
            live.stop(server)
    assert problems == []

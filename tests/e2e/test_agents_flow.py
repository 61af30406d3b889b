"""A real browser creates an agent, starts two instances, watches the pool bars move, stops one."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings

from tests import live
from tests.conftest import PASSWORD

pytestmark = pytest.mark.e2e

PORTS = range(8310, 8350)
ARTIFACTS = Path(settings.BASE_DIR) / "test-artifacts" / "e2e-agents"


@pytest.fixture
def small_org(scratch_org):
    """A committed organization whose pool holds 4 cores, so that each 1-core instance moves
    the CPU bar by a quarter.

    The test session hashes passwords with MD5 (fast), which the server's settings do not
    accept: the member's password is stored again with the server's default hasher.
    """
    from django.contrib.auth.hashers import PBKDF2PasswordHasher

    from accounts.models import User
    from agents import services
    from core.actors import Actor
    from tenants import context

    services.organization_limits_set(
        actor=Actor.system("e2e"),
        tenant=scratch_org.tenant,
        overrides={"max_cpu_millicores": 4000, "max_memory_mb": 8192},
    )
    hasher = PBKDF2PasswordHasher()
    with context.tenant_context(scratch_org.tenant):
        User.objects.filter(pk=scratch_org.member.pk).update(
            password=hasher.encode(PASSWORD, hasher.salt())
        )
    return scratch_org


@pytest.fixture
def server(small_org) -> Iterator[live.Server]:
    """The portal in a subprocess on the test database, serving `small_org`'s committed data."""
    live.require_browser()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with live.runserver(
        PORTS, log=ARTIFACTS / "server.log", ready_host=small_org.tenant.host, ready_path="/login/"
    ) as served:
        yield served


def test_create_an_agent_start_two_instances_watch_the_pool_and_stop_one(server, small_org):
    from playwright.sync_api import expect, sync_playwright

    slug = small_org.tenant.slug

    def shot(page, step: str) -> None:
        page.screenshot(path=str(ARTIFACTS / f"{step}.png"), full_page=True)

    def cpu_bar(page) -> tuple[str, float]:
        """The CPU meter's `used` value and its fill's width in pixels."""
        meter = page.locator('[data-meter="cpu"]').first
        width = meter.locator(".meter-fill").bounding_box()["width"]
        return meter.get_attribute("data-used"), width

    def instances_bar(page) -> str:
        return page.locator('[data-meter="instances"]').first.get_attribute("data-used")

    with sync_playwright() as playwright:
        browser = live.chromium(playwright)
        try:
            page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
            page.set_default_timeout(20_000)
            page.on("dialog", lambda dialog: dialog.accept())

            page.goto(server.url(slug, "/login/"))
            page.fill("input[name=username]", small_org.member.email)
            page.fill("input[name=password]", PASSWORD)
            page.click("form button[type=submit]")
            page.wait_for_url(server.url(slug, "/"))

            # Create an agent; a mistake is shown in place first.
            page.click("nav.nav >> text=Agents")
            page.click("text=New agent")
            page.fill("#id_name", "E2E summarizer")
            page.fill("#id_type", "summarizer")
            page.fill("#id_cpu", "one core")
            page.fill("#id_memory", "1GB")
            page.check("input[value='messages:read']")
            page.fill("#id_config", '{"model": "large", "limits": {"tokens": 2000}}')
            page.click("[data-agent-form] button[type=submit]")
            expect(page.locator(".field.has-error")).to_contain_text("is not a CPU amount")
            shot(page, "01-form-error")
            page.fill("#id_cpu", "1")
            page.click("[data-agent-form] button[type=submit]")
            expect(page.locator("h1")).to_have_text("E2E summarizer")
            expect(page.locator(".messages")).to_contain_text("Agent “E2E summarizer” created.")
            expect(page.locator('[data-pointer="/limits/tokens"]')).to_contain_text("definition")
            used, empty_width = cpu_bar(page)
            assert (used, instances_bar(page)) == ("0", "0")
            shot(page, "02-agent-created")

            # Start two instances: the bars move a quarter of the way each time.
            page.click("[data-start-instance]")
            expect(page.locator(".messages")).to_contain_text("Instance requested.")
            used, one_width = cpu_bar(page)
            assert (used, instances_bar(page)) == ("1000", "1")
            page.click("[data-start-instance]")
            expect(page.locator("tr[data-instance]")).to_have_count(2)
            used, two_widths = cpu_bar(page)
            assert (used, instances_bar(page)) == ("2000", "2")
            assert empty_width < one_width < two_widths
            assert two_widths == pytest.approx(2 * one_width, rel=0.05)
            expect(page.locator('[data-meter="cpu"] .meter-value').first).to_have_text("2 / 4")
            shot(page, "03-two-instances")

            # Stop one: its resources return to the pool at once.
            page.locator("tr[data-instance] [data-stop-instance]").first.click()
            expect(page.locator(".messages")).to_contain_text("Instance stopped")
            expect(page.locator('tr[data-status="stopped"]')).to_have_count(1)
            expect(page.locator('tr[data-status="pending"]')).to_have_count(1)
            used, after_stop = cpu_bar(page)
            assert (used, instances_bar(page)) == ("1000", "1")
            assert after_stop == pytest.approx(one_width, rel=0.05)
            shot(page, "04-one-stopped")

            # The pool page tells the same story.
            page.click("nav.nav >> text=Resources")
            expect(page.locator('[data-meter="instances"] .meter-value')).to_have_text("1 / 50")
            expect(page.locator('[data-meter="memory"] .meter-value')).to_have_text("1GB / 8GB")
            shot(page, "05-resources")
        finally:
            browser.close()

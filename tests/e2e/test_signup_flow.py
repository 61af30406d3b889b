"""A real browser signs up an organization, lands on its dashboard, invites a member, logs out."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings

from core.actors import Actor
from organizations import services
from tenants.models import Tenant
from tests import live

pytestmark = pytest.mark.e2e

PORTS = range(8100, 8150)
ARTIFACTS = Path(settings.BASE_DIR) / "test-artifacts" / "e2e"
PASSWORD = "e2e-long-passphrase-2024"


@pytest.fixture
def server(django_db_setup) -> Iterator[live.Server]:
    """The portal in a subprocess, on the test database. The server commits on its own
    connections, so its data is real and must be cleaned up."""
    live.require_browser()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with live.runserver(PORTS, log=ARTIFACTS / "server.log") as served:
        yield served


def delete_organization(slug: str) -> bool:
    """Delete the organization the browser created (the server committed it)."""
    tenant = Tenant.objects.filter(slug=slug).first()
    if tenant is None:
        return False
    services.tenant_delete(actor=Actor.system("e2e"), tenant=tenant)
    return True


def test_sign_up_land_on_the_dashboard_invite_and_log_out(server, django_db_blocker):
    from playwright.sync_api import expect, sync_playwright

    suffix = uuid.uuid4().hex[:8]
    name, slug = f"E2E Org {suffix}", f"e2e-org-{suffix}"
    invitee = f"new-{suffix}@example.test"

    def shot(page, step: str) -> None:
        page.screenshot(path=str(ARTIFACTS / f"{step}.png"), full_page=True)

    try:
        with sync_playwright() as playwright:
            browser = live.chromium(playwright)
            try:
                page = browser.new_context(viewport={"width": 1280, "height": 800}).new_page()
                page.set_default_timeout(20_000)

                # Sign up on the public host; the address is suggested from the name.
                page.goto(server.url(path="/signup/"))
                shot(page, "01-signup")
                page.fill("#id_name", name)
                expect(page.locator("#id_slug")).to_have_value(slug)
                page.select_option("#id_region", "eu-west-1")
                page.fill("#id_full_name", "Erin Example")
                page.fill("#id_owner_email", f"owner-{suffix}@example.test")
                page.fill("#id_password", PASSWORD)
                page.fill("#id_password_confirm", PASSWORD)
                shot(page, "02-signup-filled")
                page.click("button:has-text('Create organization')")

                # The handoff posts the one-time token and lands on the dashboard, logged in.
                page.wait_for_url(server.url(slug, "/"))
                expect(page.locator("h1")).to_have_text(name)
                expect(page.locator(".messages")).to_contain_text("Your organization is ready")
                expect(page.locator(".stat-value").first).to_have_text("Free")
                assert "token" not in page.url
                shot(page, "03-dashboard")

                # Invite a member and see the pending invitation.
                page.click("nav.nav >> text=Members")
                page.wait_for_url(server.url(slug, "/members/"))
                page.fill("#id_email", invitee)
                page.select_option("#id_role", "member")
                page.click("button:has-text('Send invitation')")
                expect(page.locator(".messages")).to_contain_text(f"Invitation sent to {invitee}")
                expect(page.locator(f'tr[data-invitation="{invitee}"]')).to_contain_text("Member")
                shot(page, "04-members-invited")

                # Log out through the user menu.
                page.click("details.menu > summary")
                page.click("button:has-text('Log out')")
                page.wait_for_url(server.url(slug, "/login/"))
                expect(page.locator(".messages")).to_contain_text("You are signed out.")
                shot(page, "05-logged-out")
                page.goto(server.url(slug, "/members/"))
                assert page.url.startswith(server.url(slug, "/login/"))
            finally:
                browser.close()

        # The console email backend printed the invitation, linking to the organization's host.
        log = server.log.read_text()
        assert re.search(rf"http://{slug}\.localhost:{server.port}/invite/[\w-]+/", log)
    finally:
        with django_db_blocker.unblock():
            deleted = delete_organization(slug)
    assert deleted

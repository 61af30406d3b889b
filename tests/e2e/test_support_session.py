"""A real browser: staff sign in to the admin, open a support session into an organization with a
reason, are handed over to its portal and see the read-only banner; the owner sees who and until
when, ends it, and the staff member's next page is refused. Screenshots at 1280 and 390 px go to
test-artifacts/support/ (and to $SCREENSHOTS_DIR when set, for docs/screenshots)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings

from tests import live
from tests.conftest import PASSWORD

pytestmark = pytest.mark.e2e

PORTS = range(8450, 8500)
ARTIFACTS = Path(settings.BASE_DIR) / "test-artifacts" / "support"
REASON = "Ticket 4711: the customer's agents do not start"
WIDTHS = {"desktop": 1280, "phone": 390}


@pytest.fixture
def people(scratch_org, django_db_blocker):
    """A committed staff account and the organization's owner, with passwords the server's
    hasher accepts (the suite's own is a fast one the server does not list)."""
    from django.contrib.auth.hashers import PBKDF2PasswordHasher

    from accounts.models import User
    from tenants import context

    hasher = PBKDF2PasswordHasher()
    with django_db_blocker.unblock():
        with context.public_context():
            staff = User.objects.create_superuser(
                email=f"support-{uuid.uuid4().hex[:6]}@platform.test",
                password=None,
                full_name="Sam Support",
            )
            User.objects.filter(pk=staff.pk).update(password=hasher.encode(PASSWORD, hasher.salt()))
        with context.tenant_context(scratch_org.tenant):
            User.objects.filter(pk=scratch_org.owner.pk).update(
                password=hasher.encode(PASSWORD, hasher.salt())
            )
        yield staff, scratch_org
        with context.public_context():
            # Deactivated, not deleted (deleting collects tenant-only tables from `public`).
            User.objects.filter(pk=staff.pk).update(is_active=False)


@pytest.fixture
def server(people) -> Iterator[live.Server]:
    live.require_browser()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with live.runserver(PORTS, log=ARTIFACTS / "server.log") as served:
        yield served


def test_staff_open_a_session_from_the_admin_and_the_owner_ends_it(
    server, people, django_db_blocker
):
    from playwright.sync_api import expect, sync_playwright

    staff, org = people
    slug, name = org.tenant.slug, org.tenant.name
    folders = [ARTIFACTS]
    if os.environ.get("SCREENSHOTS_DIR"):
        folders.append(Path(settings.BASE_DIR) / os.environ["SCREENSHOTS_DIR"])

    def shots(page, name: str) -> None:
        """The page at both widths, and no sideways scrolling on the phone."""
        for label, width in WIDTHS.items():
            page.set_viewport_size({"width": width, "height": 800})
            for folder in folders:
                page.screenshot(path=str(folder / f"{name}-{label}.png"), full_page=True)
            overflow = page.evaluate(
                "document.documentElement.scrollWidth - document.documentElement.clientWidth"
            )
            assert overflow <= 0, f"{name} scrolls sideways at {width} px"
        page.set_viewport_size({"width": 1280, "height": 800})

    with sync_playwright() as playwright:
        browser = live.chromium(playwright)
        try:
            staff_page = browser.new_context(viewport={"width": 1280, "height": 800}).new_page()
            staff_page.set_default_timeout(20_000)

            # Staff sign in to the admin on the public host, with their password.
            staff_page.goto(server.url(path="/admin/login/"))
            staff_page.fill("#id_username", staff.email)
            staff_page.fill("#id_password", PASSWORD)
            staff_page.click("input[type=submit]")
            expect(staff_page.locator("#site-name")).to_contain_text("AgentPlane platform")

            # Organizations → select one → the action asks for a reason and a duration.
            staff_page.goto(server.url(path=f"/admin/tenants/tenant/?q={slug}"))
            staff_page.check("input[name=_selected_action]")
            staff_page.select_option("select[name=action]", "open_support_session")
            staff_page.click("button[name=index]")
            expect(staff_page.locator("#content h1")).to_have_text(
                f"Open a support session into {name}"
            )
            staff_page.fill("#id_reason", REASON)
            staff_page.select_option("#id_minutes", "30")
            shots(staff_page, "admin-support-open")
            staff_page.fill("#id_reason", "   ")  # blank: the server refuses, asks again
            staff_page.click("input[name=apply]")
            expect(staff_page.locator(".errorlist")).to_contain_text("This field is required")
            staff_page.fill("#id_reason", REASON)
            staff_page.select_option("#id_minutes", "30")
            staff_page.click("input[name=apply]")

            # The hand-off posts the one-time token to the organization's host.
            staff_page.click(f'input[value="Continue to {name}\'s portal"]')
            staff_page.wait_for_url(server.url(slug, "/"))
            assert "token" not in staff_page.url
            banner = staff_page.locator(".support-banner")
            expect(banner).to_contain_text("Support session, read-only.")
            expect(banner).to_contain_text("Sam Support")
            expect(banner).to_contain_text(REASON)
            expect(staff_page.locator("h1")).to_have_text(name)
            # The gateway refuses a support session: the live feed says so, it does not retry.
            expect(staff_page.locator("[data-live-status]")).to_have_text(
                "Off in a support session"
            )
            shots(staff_page, "support-session")

            # The owner signs in on the organization's host and sees who, why, until when.
            owner_page = browser.new_context(viewport={"width": 1280, "height": 800}).new_page()
            owner_page.set_default_timeout(20_000)
            owner_page.goto(server.url(slug, "/login/"))
            owner_page.fill("#id_username", org.owner.email)
            owner_page.fill("#id_password", PASSWORD)
            owner_page.click("button[type=submit]")
            owner_banner = owner_page.locator(".support-banner")
            expect(owner_banner).to_contain_text("Platform support has access.")
            expect(owner_banner).to_contain_text("Sam Support can read this organization until")
            shots(owner_page, "support-banner-owner")

            # "End now": the banner goes, and the staff member's next page is refused.
            owner_page.click(".support-banner button:has-text('End now')")
            expect(owner_page.locator(".messages")).to_contain_text("is ended")
            expect(owner_page.locator(".support-banner")).to_have_count(0)
            staff_page.goto(server.url(slug, "/agents/"))
            staff_page.wait_for_url(server.url(slug, "/login/"))
            expect(staff_page.locator(".messages")).to_contain_text(
                "The support session has ended."
            )
        finally:
            browser.close()

    from audit.models import AuditEvent
    from tenants import context

    with django_db_blocker.unblock():
        for enter in (context.public_context, lambda: context.tenant_context(org.tenant)):
            with enter():
                actions = set(
                    AuditEvent.objects.filter(actor_label=staff.email).values_list(
                        "action", flat=True
                    )
                )
                assert {
                    "support.session_opened",
                    "support.session_joined",
                    "support.request",
                } <= actions
                ended = AuditEvent.objects.filter(action="support.session_ended").latest("id")
                assert ended.actor_label == org.owner.email

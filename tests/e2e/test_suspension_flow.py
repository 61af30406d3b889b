"""Staff suspend an organization from Django admin in a real browser: the action asks for a
reason and a confirmation, and the reason reaches both audit logs."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings

from audit.models import AuditEvent
from core.actors import Actor
from organizations import services
from tenants import context
from tests import live
from tests.conftest import build_org

pytestmark = pytest.mark.e2e

PORTS = range(9010, 9050)  # this range: other suites use 8100-8149
ARTIFACTS = Path(settings.BASE_DIR) / "test-artifacts" / "e2e"
PASSWORD = "e2e-staff-passphrase-2024"


@pytest.fixture
def server(django_db_setup) -> Iterator[live.Server]:
    live.require_browser()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with live.runserver(PORTS, log=ARTIFACTS / "suspension-server.log") as served:
        yield served


def test_staff_suspend_with_a_reason(server, django_db_blocker):
    from playwright.sync_api import expect, sync_playwright

    from accounts.models import User

    suffix = uuid.uuid4().hex[:8]
    with django_db_blocker.unblock(), context.public_context():
        org = build_org(f"susp-{suffix}", f"Suspend Me {suffix}")
        staff = User.objects.create_superuser(
            email=f"staff-{suffix}@platform.test", password=PASSWORD
        )
    try:
        with sync_playwright() as playwright:
            browser = live.chromium(playwright)
            try:
                for width, label in ((1280, "desktop"), (390, "phone")):
                    page = browser.new_context(viewport={"width": width, "height": 900}).new_page()
                    page.set_default_timeout(20_000)
                    page.goto(server.url(path="/admin/login/"))
                    page.fill("input[name=username]", staff.email)
                    page.fill("input[name=password]", PASSWORD)
                    page.click("input[type=submit]")
                    page.goto(server.url(path=f"/admin/tenants/tenant/?q=susp-{suffix}"))
                    page.check(f"input[name=_selected_action][value='{org.tenant.pk}']")
                    page.select_option("select[name=action]", "suspend")
                    page.click("button[name=index]")
                    expect(page.locator("h1")).to_contain_text("Suspend 1 organization")
                    page.screenshot(path=str(ARTIFACTS / f"suspend-{label}.png"), full_page=True)
                    if label == "phone":
                        break
                    page.fill("textarea[name=reason]", "Unpaid invoices since October")
                    page.check("input[name=confirm]")
                    page.click("input[name=apply]")
                    expect(page.locator(".messagelist")).to_contain_text("1 organization(s)")
            finally:
                browser.close()
        with django_db_blocker.unblock():
            org.tenant.refresh_from_db()
            assert org.tenant.status == "suspended"
            for enter in (context.public_context, lambda: context.tenant_context(org.tenant)):
                with enter():
                    event = AuditEvent.objects.filter(action="organization.suspended").latest(
                        "sequence"
                    )
                    assert event.details["reason"] == "Unpaid invoices since October"
                    assert event.actor_label == staff.email
    finally:
        with django_db_blocker.unblock():
            context.activate(None)
            services.tenant_delete(actor=Actor.system("e2e"), tenant=org.tenant)
            User.objects.filter(pk=staff.pk).delete()

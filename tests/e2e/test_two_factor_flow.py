"""Two-factor authentication in a real browser: the owner sets it up (the test computes the codes
from the setup key the page shows), signs in with a code and with a recovery code, requires it of
every member; a member on a phone is held at the setup until done. Every page passes axe-core and
fits the window; screenshots go to test-artifacts/pages/ (and $SCREENSHOTS_DIR when set)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pyotp
import pytest
from django.conf import settings

from tests import live
from tests.conftest import PASSWORD
from tests.e2e.test_portal_pages import ARTIFACTS, check, open_page

pytestmark = pytest.mark.e2e

PORTS = range(8450, 8500)


@pytest.fixture
def people(scratch_org):
    """A committed organization whose owner and member sign in with the server's hasher."""
    from django.contrib.auth.hashers import PBKDF2PasswordHasher

    from accounts.models import User
    from tenants import context

    hasher = PBKDF2PasswordHasher()
    with context.tenant_context(scratch_org.tenant):
        User.objects.filter(pk__in=[scratch_org.owner.pk, scratch_org.member.pk]).update(
            password=hasher.encode(PASSWORD, hasher.salt())
        )
    return scratch_org


@pytest.fixture
def server(people) -> Iterator[str]:
    live.require_browser()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    port = live.free_port(PORTS)
    with (ARTIFACTS / "two-factor-server.log").open("w") as log:
        process = live.uvicorn(port, log=log, PORTAL_PORT=str(port), DEBUG="1")
        try:
            yield str(port)
        finally:
            live.stop(process)


def unused_code(secret: str) -> str:
    """The next 30-second step's code: accepted (clock drift), and not spent by the setup."""
    return pyotp.TOTP(secret).at(time.time() + 30)


def test_set_up_sign_in_with_codes_and_require_it_of_everyone(server, people):
    from playwright.sync_api import expect, sync_playwright

    base = f"http://{people.tenant.host}:{server}"
    shots = [ARTIFACTS]
    if os.environ.get("SCREENSHOTS_DIR"):
        shots.append(Path(settings.BASE_DIR) / os.environ["SCREENSHOTS_DIR"])
    problems: list[str] = []

    def sign_in(page, email: str) -> None:
        page.goto(base + "/login/")
        page.fill("input[name=username]", email)
        page.fill("input[name=password]", PASSWORD)
        page.click(".panel button[type=submit]")

    def set_up(page, tag: str, name: str) -> tuple[str, list[str]]:
        """On the setup page: read the key, confirm with a code; returns (secret, codes)."""
        expect(page.locator("[data-qr-code] svg")).to_be_visible()
        check(page, name, tag, problems, shots=shots)
        secret = page.get_attribute("[data-setup-key]", "data-setup-key")
        page.fill("input[name=code]", pyotp.TOTP(secret).now())
        page.click("[data-two-factor-confirm] button[type=submit]")
        page.wait_for_url(base + "/profile/two-factor/recovery-codes/")
        codes = page.locator("[data-recovery-codes] code").all_inner_texts()
        assert len(codes) == 10
        check(page, "two-factor-codes", tag, problems, shots=shots)
        page.click("text=I have saved them")
        return secret, codes

    with sync_playwright() as playwright:
        browser = live.chromium(playwright)
        try:
            # The owner, at desktop width: set up from the profile.
            context, page = open_page(browser, problems, viewport={"width": 1280, "height": 900})
            page.set_default_timeout(20_000)
            sign_in(page, people.owner.email)
            page.wait_for_url(base + "/")
            page.goto(base + "/profile/")
            expect(page.locator("[data-two-factor]")).to_have_attribute("data-two-factor", "off")
            page.click("[data-set-up-two-factor]")
            secret, codes = set_up(page, "desktop", "two-factor-setup")
            page.wait_for_url(base + "/profile/")
            expect(page.locator("[data-two-factor]")).to_have_attribute("data-two-factor", "on")
            expect(page.locator("#two-factor")).to_contain_text("10 recovery codes left")
            check(page, "profile-two-factor-on", "desktop", problems, shots=shots)

            # Signing in again asks for the code after the password.
            page.click("details.menu summary")
            page.click("details.menu button:has-text('Log out')")
            page.wait_for_url(base + "/login/")
            sign_in(page, people.owner.email)
            page.wait_for_url(base + "/login/code/")
            check(page, "login-code", "desktop", problems, shots=shots)
            page.goto(base + "/agents/")  # not signed in yet: no page opens
            assert page.url.startswith(base + "/login/")
            page.goto(base + "/login/code/")
            page.fill("input[name=code]", "000000")
            page.click(".panel button[type=submit]")
            expect(page.locator("[data-error-summary]")).to_be_focused()
            check(page, "login-code-error", "desktop", problems, shots=shots)
            page.fill("input[name=code]", unused_code(secret))
            page.click(".panel button[type=submit]")
            page.wait_for_url(base + "/")

            # The owner requires it of every member.
            page.goto(base + "/members/")
            page.click("[data-two-factor-requirement] button[type=submit]")
            expect(page.locator("#security")).to_contain_text("Required")
            check(page, "members-two-factor", "desktop", problems, shots=shots)
            context.close()

            # A recovery code signs in once, in a fresh browser.
            context, page = open_page(browser, problems, viewport={"width": 1280, "height": 900})
            sign_in(page, people.owner.email)
            page.wait_for_url(base + "/login/code/")
            page.fill("input[name=code]", codes[0])
            page.click(".panel button[type=submit]")
            page.wait_for_url(base + "/")
            expect(page.locator(".messages")).to_contain_text("recovery code: 9 left")
            context.close()

            # The member, on a phone: held at the setup until it is done.
            context, page = open_page(browser, problems, viewport={"width": 390, "height": 844})
            page.set_default_timeout(20_000)
            sign_in(page, people.member.email)
            page.wait_for_url(base + "/profile/two-factor/")
            expect(page.locator(".messages")).to_contain_text("requires it")
            page.goto(base + "/agents/")
            assert page.url == base + "/profile/two-factor/"
            set_up(page, "phone", "two-factor-required")
            page.wait_for_url(base + "/profile/")
            page.goto(base + "/agents/")
            assert page.url == base + "/agents/"
            check(page, "profile-after-setup", "phone", problems, shots=[ARTIFACTS])
            context.close()
            # The code step at phone width.
            context, page = open_page(browser, problems, viewport={"width": 390, "height": 844})
            sign_in(page, people.member.email)
            page.wait_for_url(base + "/login/code/")
            check(page, "login-code", "phone", problems, shots=shots)
            context.close()
        finally:
            browser.close()

    assert not problems, "\n".join(problems)


@pytest.fixture
def staff_email(server) -> str:
    """A committed staff account (unique to this run) the server's hasher accepts."""
    import uuid

    from django.contrib.auth.hashers import PBKDF2PasswordHasher

    from accounts import services
    from accounts.models import User
    from core.actors import Actor
    from tenants import context

    email = f"staff-{uuid.uuid4().hex[:8]}@platform.test"
    services.staff_user_create(actor=Actor.system("e2e"), email=email, password=PASSWORD)
    hasher = PBKDF2PasswordHasher()
    with context.public_context():
        User.objects.filter(email=email).update(password=hasher.encode(PASSWORD, hasher.salt()))
    return email


def test_staff_set_up_two_factor_in_admin_and_sign_in_with_a_code(server, staff_email):
    from playwright.sync_api import expect, sync_playwright

    base = f"http://localhost:{server}"
    shots = [ARTIFACTS]
    if os.environ.get("SCREENSHOTS_DIR"):
        shots.append(Path(settings.BASE_DIR) / os.environ["SCREENSHOTS_DIR"])

    def sign_in(page) -> None:
        page.goto(base + "/admin/login/")
        page.fill("input[name=username]", staff_email)
        page.fill("input[name=password]", PASSWORD)
        page.click("#login-form input[type=submit]")

    with sync_playwright() as playwright:
        browser = live.chromium(playwright)
        try:
            page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
            page.set_default_timeout(20_000)
            sign_in(page)
            page.wait_for_url(base + "/admin/")
            page.click("[data-admin-two-factor]")
            page.click("text=Set up two-factor authentication")
            page.wait_for_url(base + "/admin/two-factor/setup/")
            for folder in shots:
                page.screenshot(
                    path=str(folder / "admin-two-factor-setup-desktop.png"), full_page=True
                )
            secret = page.get_attribute("[data-setup-key]", "data-setup-key")
            page.fill("input[name=code]", pyotp.TOTP(secret).now())
            page.click("[data-two-factor-confirm] button[type=submit]")
            page.wait_for_url(base + "/admin/two-factor/recovery-codes/")
            assert len(page.locator("[data-recovery-codes] code").all_inner_texts()) == 10
            page.click("text=I have saved them")
            expect(page.locator("[data-two-factor]")).to_have_attribute("data-two-factor", "on")

            page.click("#logout-form button")
            sign_in(page)
            page.wait_for_url(base + "/admin/login/code/")
            page.goto(base + "/admin/tenants/tenant/")  # not signed in yet
            assert page.url.startswith(base + "/admin/login/")
            page.goto(base + "/admin/login/code/")
            for folder in shots:
                page.screenshot(path=str(folder / "admin-login-code-desktop.png"), full_page=True)
            page.fill("input[name=code]", unused_code(secret))
            page.click("#login-form input[type=submit]")
            page.wait_for_url(base + "/admin/")
            expect(page.locator("#site-name")).to_contain_text("AgentPlane platform")
        finally:
            browser.close()

"""A real browser writes a tool (a syntax error shown on save first), saves it, runs it with Test
run, and sees output and logs; screenshots at desktop and phone widths in test-artifacts/
(docs/screenshots/tool*.png are copies of them)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings

from tests import live
from tests.conftest import PASSWORD

pytestmark = pytest.mark.e2e

PORTS = range(8350, 8390)
ARTIFACTS = Path(settings.BASE_DIR) / "test-artifacts" / "e2e-tools"
FIXED = (
    "async function run(input, api) {\n"
    "  console.log('greeting', input.name);\n"
    "  return {greeting: `Hello, ${input.name}`};\n"
    "}\n"
)
BROKEN = FIXED.replace("};\n}", "\n}")
SECRET_VALUE = "e2e-secret-value-7781"  # noqa: S105 (a test value)
SECRET_READER = (
    "async function run(input, api) {\n"
    "  const token = await api.secret('E2E_TOKEN');\n"
    "  console.log('token', token);\n"
    "  return {token, length: token.length};\n"
    "}\n"
)


@pytest.fixture
def admin_org(scratch_org):
    """The admin's password stored again with the server's default hasher (the test session
    hashes with MD5, which the server does not accept)."""
    from django.contrib.auth.hashers import PBKDF2PasswordHasher

    from accounts.models import User
    from tenants import context

    hasher = PBKDF2PasswordHasher()
    with context.tenant_context(scratch_org.tenant):
        User.objects.filter(pk=scratch_org.admin.pk).update(
            password=hasher.encode(PASSWORD, hasher.salt())
        )
    return scratch_org


@pytest.fixture
def server(admin_org) -> Iterator[live.Server]:
    live.require_browser()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with live.runserver(
        PORTS, log=ARTIFACTS / "server.log", ready_host=admin_org.tenant.host, ready_path="/login/"
    ) as served:
        yield served


def _sign_in(page, server, org) -> None:
    slug = org.tenant.slug
    page.goto(server.url(slug, "/login/"))
    page.fill("input[name=username]", org.admin.email)
    page.fill("input[name=password]", PASSWORD)
    page.click("form button[type=submit]")
    page.wait_for_url(server.url(slug, "/"))


def test_grant_a_tool_a_secret_and_see_it_redacted(server, admin_org):
    from playwright.sync_api import expect, sync_playwright

    slug = admin_org.tenant.slug
    with sync_playwright() as playwright:
        browser = live.chromium(playwright)
        try:
            for width, suffix in ((1280, "desktop"), (390, "phone")):
                context_ = browser.new_context(viewport={"width": width, "height": 900})
                page = context_.new_page()
                page.set_default_timeout(20_000)
                _sign_in(page, server, admin_org)
                if suffix == "desktop":  # the secret, set on the Secrets page (write-only)
                    page.goto(server.url(slug, "/secrets/"))
                    page.fill("#id_name", "E2E_TOKEN")
                    page.fill("#id_value", SECRET_VALUE)
                    page.click("form[action$='/secrets/'] button[type=submit]")
                    expect(page.locator(".messages")).to_contain_text("E2E_TOKEN")
                page.goto(server.url(slug, "/tools/new/"))
                page.fill("#id_name", f"token-{suffix}")
                page.fill("#id_code", SECRET_READER)
                page.check('input[name=permissions][value="secrets:E2E_TOKEN"]')
                page.click("[data-tool-form] button[type=submit]")
                expect(page.locator(".messages")).to_contain_text("saved as version 1")
                expect(page.locator('input[value="secrets:E2E_TOKEN"]')).to_be_checked()
                page.fill("#id_input", '{"name": "Ada"}')
                page.click("[data-run-form] button[type=submit]")
                result = page.locator(".run-result")
                expect(result).to_have_attribute("data-run-status", "ok")
                expect(result).to_contain_text("[secret E2E_TOKEN]")
                expect(result).to_contain_text(f'"length": {len(SECRET_VALUE)}')
                assert SECRET_VALUE not in page.content()
                page.screenshot(
                    path=str(ARTIFACTS / f"tool-secret-run-{suffix}.png"), full_page=True
                )
                context_.close()
        finally:
            browser.close()


def test_write_a_tool_fix_a_syntax_error_and_test_run_it(server, admin_org):
    from playwright.sync_api import expect, sync_playwright

    slug = admin_org.tenant.slug

    with sync_playwright() as playwright:
        browser = live.chromium(playwright)
        try:
            for width, suffix in ((1280, "desktop"), (390, "phone")):
                context = browser.new_context(viewport={"width": width, "height": 900})
                page = context.new_page()
                page.set_default_timeout(20_000)
                _sign_in(page, server, admin_org)

                name = f"greet-{suffix}"
                page.goto(server.url(slug, "/tools/new/"))
                page.fill("#id_name", name)
                page.fill("#id_code", BROKEN)
                page.click("[data-tool-form] button[type=submit]")
                expect(page.locator(".field.has-error")).to_contain_text("SyntaxError")
                page.screenshot(
                    path=str(ARTIFACTS / f"tool-syntax-error-{suffix}.png"), full_page=True
                )

                page.fill("#id_code", FIXED)
                page.click("[data-tool-form] button[type=submit]")
                expect(page.locator(".messages")).to_contain_text("saved as version 1")
                page.fill("#id_input", '{"name": "Ada"}')
                page.click("[data-run-form] button[type=submit]")
                result = page.locator(".run-result")
                expect(result).to_have_attribute("data-run-status", "ok")
                expect(result).to_contain_text("Hello, Ada")
                expect(result).to_contain_text("greeting Ada")
                page.screenshot(path=str(ARTIFACTS / f"tool-test-run-{suffix}.png"), full_page=True)

                page.goto(server.url(slug, "/tools/"))
                expect(page.locator(f'tr[data-tool="{name}"]')).to_have_count(1)
                page.screenshot(path=str(ARTIFACTS / f"tools-{suffix}.png"), full_page=True)
                context.close()
        finally:
            browser.close()

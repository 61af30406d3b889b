"""Every portal page in a real browser, at a desktop and a phone width, in the light theme
(and the dark one at desktop width): no page scrolls sideways at 390 px, axe-core finds no
serious or critical violation, the phone's navigation collapses behind its Menu button, and a
suspended organization's page is styled. Screenshots of every page go to test-artifacts/pages/
(and to $SCREENSHOTS_DIR when set: `SCREENSHOTS_DIR=docs/screenshots` refreshes the README's)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from django.conf import settings

from tests import live
from tests.conftest import PASSWORD

pytestmark = pytest.mark.e2e

PORTS = range(8400, 8450)
ARTIFACTS = Path(settings.BASE_DIR) / "test-artifacts" / "pages"
AXE = Path(__file__).parent / "vendor" / "axe-core" / "axe.min.js"
WIDTHS = {"desktop": 1280, "phone": 390}
BLOCKING = ("serious", "critical")


def elsewhere(function, *args, **kwargs):
    """A database call from another thread: Playwright's sync API runs an event loop in this
    one, where Django refuses database access."""
    from django.db import connection

    def call():
        try:
            return function(*args, **kwargs)
        finally:
            connection.close()

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(call).result()


@pytest.fixture
def furnished_org(scratch_org):
    """A committed organization with something on every page: an agent with a pending
    instance, an API key, a config key, a pending invitation; passwords the server accepts."""
    from django.contrib.auth.hashers import PBKDF2PasswordHasher

    from accounts import services as account_services
    from accounts.models import User
    from agents import services as agent_services
    from core.actors import Actor
    from credentials import services as credential_services
    from tenants import context

    hasher = PBKDF2PasswordHasher()
    with context.tenant_context(scratch_org.tenant):
        User.objects.filter(pk__in=[scratch_org.owner.pk, scratch_org.member.pk]).update(
            password=hasher.encode(PASSWORD, hasher.salt())
        )
        owner = Actor.for_user(scratch_org.owner)
        agent = agent_services.agent_create(
            actor=owner, name="Support triage", type="assistant", cpu="0.5", memory="512MB"
        )
        agent_services.instance_request(actor=owner, agent_id=agent.pk)
        agent_services.config_set(
            actor=owner, key="agents.assistant", value={"model": "small", "temperature": 0.2}
        )
        agent_services.config_set(
            actor=owner, key="agents.assistant", value={"model": "large", "temperature": 0.2}
        )
        credential_services.api_key_create(
            actor=owner, name="CI deploys", scopes=["agents:read", "agents:write"]
        )
        account_services.invitation_create(
            actor=owner, email="new.hire@example.test", role="member"
        )
    scratch_org.agent = agent
    return scratch_org


@pytest.fixture
def server(furnished_org) -> Iterator[str]:
    """The whole ASGI app (portal, API, WebSocket) under uvicorn; yields the port."""
    live.require_browser()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    port = live.free_port(PORTS)
    with (ARTIFACTS / "server.log").open("w") as log:
        process = live.uvicorn(port, log=log, PORTAL_PORT=str(port), DEBUG="1")
        try:
            yield str(port)
        finally:
            live.stop(process)


def organization_pages(agent_id) -> list[tuple[str, str]]:
    return [
        ("dashboard", "/"),
        ("members", "/members/"),
        ("agents", "/agents/"),
        ("agent-new", "/agents/new/"),
        ("agent-detail", f"/agents/{agent_id}/"),
        ("agent-edit", f"/agents/{agent_id}/edit/"),
        ("agent-scaling", f"/agents/{agent_id}/scaling/"),
        ("resources", "/resources/"),
        ("config", "/config/"),
        ("config-edit", "/config/?key=agents.assistant"),
        ("config-history", "/config/history/?key=agents.assistant"),
        ("audit", "/audit/"),
        ("audit-alerts", "/audit/alerts/"),
        ("audit-rules", "/audit/rules/"),
        ("api-keys", "/api-keys/"),
        ("profile", "/profile/"),
        ("two-factor-setup", "/profile/two-factor/"),
        ("tools", "/tools/"),
        ("tool-new", "/tools/new/"),
        ("usage", "/usage/"),
        ("billing", "/billing/"),
        ("knowledge", "/knowledge/"),
        ("knowledge-new", "/knowledge/new/"),
        ("secrets", "/secrets/"),
        ("settings", "/settings/"),
    ]


SIGNED_OUT_PAGES = [("login", "/login/"), ("password-reset", "/password-reset/")]
PUBLIC_PAGES = [("landing", "/"), ("signup", "/signup/")]


def open_page(browser, problems: list[str], **options):
    """A page in a new context with axe-core loaded into every document (an init script, which
    the content security policy does not govern), reporting any CSP violation as a problem: a
    script or style the policy blocks is a feature broken in production browsers."""
    context = browser.new_context(**options)
    context.add_init_script(path=str(AXE))
    page = context.new_page()
    page.on(
        "console",
        lambda message: (
            problems.append(f"{page.url}: {message.text}")
            if "Content Security Policy" in message.text
            else None
        ),
    )
    return context, page


def check(page, name: str, tag: str, problems: list[str], *, shots: list[Path]) -> None:
    """Overflow, axe-core and screenshots of the page that is loaded."""
    width = page.evaluate("document.documentElement.scrollWidth")
    viewport = page.evaluate("document.documentElement.clientWidth")
    if width > viewport:
        problems.append(f"{name} ({tag}): the page is {width} px wide in a {viewport} px window")
    violations = page.evaluate(
        """async () => (await axe.run(document, {resultTypes: ["violations"]})).violations
            .map(v => ({id: v.id, impact: v.impact,
                        nodes: v.nodes.slice(0, 3).map(n => n.target.join(" "))}))"""
    )
    for violation in violations:
        if violation["impact"] in BLOCKING:
            problems.append(
                f"{name} ({tag}): axe {violation['impact']} {violation['id']} {violation['nodes']}"
            )
    landmarks = page.evaluate(
        "() => ['main', 'header, [role=banner]'].map(s => document.querySelectorAll(s).length)"
    )
    if landmarks[0] != 1:
        problems.append(f"{name} ({tag}): {landmarks[0]} main landmarks")
    for folder in shots:
        page.screenshot(path=str(folder / f"{name}-{tag}.png"), full_page=True)


def test_every_page_fits_a_phone_and_passes_axe(server, furnished_org):
    from playwright.sync_api import expect, sync_playwright

    from core.actors import Actor
    from organizations import services

    port = server
    org_base = f"http://{furnished_org.tenant.host}:{port}"
    public_base = f"http://localhost:{port}"
    shots = [ARTIFACTS]
    if os.environ.get("SCREENSHOTS_DIR"):
        shots.append(Path(settings.BASE_DIR) / os.environ["SCREENSHOTS_DIR"])
    problems: list[str] = []

    with sync_playwright() as playwright:
        browser = live.chromium(playwright)
        try:
            for tag, width in WIDTHS.items():
                # Colours do not depend on the width: the dark theme is checked at one width.
                for scheme in ("light", "dark") if tag == "desktop" else ("light",):
                    label = tag if scheme == "light" else f"{tag}-dark"
                    context, page = open_page(
                        browser,
                        problems,
                        viewport={"width": width, "height": 900},
                        color_scheme=scheme,
                    )
                    page.set_default_timeout(20_000)
                    for name, path in PUBLIC_PAGES:
                        page.goto(public_base + path)
                        check(page, name, label, problems, shots=shots)
                    for name, path in SIGNED_OUT_PAGES:
                        page.goto(org_base + path)
                        check(page, name, label, problems, shots=shots)
                    # A form sent back with errors: the summary takes the focus.
                    page.goto(org_base + "/login/")
                    page.fill("input[name=username]", furnished_org.owner.email)
                    page.fill("input[name=password]", "not the password")
                    page.click(".panel button[type=submit]")
                    expect(page.locator("[data-error-summary]")).to_be_focused()
                    check(page, "login-error", label, problems, shots=shots)

                    page.fill("input[name=username]", furnished_org.owner.email)
                    page.fill("input[name=password]", PASSWORD)
                    page.click(".panel button[type=submit]")
                    page.wait_for_url(org_base + "/")
                    for name, path in organization_pages(furnished_org.agent.pk):
                        page.goto(org_base + path)
                        check(page, name, label, problems, shots=shots)

                    if tag == "phone" and scheme == "light":
                        # The navigation hides behind the Menu button and opens on a tap.
                        page.goto(org_base + "/")
                        toggle = page.locator("[data-nav-toggle]")
                        nav_link = page.locator("#site-nav a", has_text="Agents")
                        expect(toggle).to_be_visible()
                        expect(nav_link).to_be_hidden()
                        toggle.click()
                        expect(toggle).to_have_attribute("aria-expanded", "true")
                        expect(nav_link).to_be_visible()
                        page.screenshot(path=str(ARTIFACTS / "navigation-open-phone.png"))
                        for folder in shots[1:]:
                            page.screenshot(path=str(folder / "navigation-open-phone.png"))
                        nav_link.click()
                        page.wait_for_url(org_base + "/agents/")
                    if tag == "desktop" and scheme == "light":
                        expect(page.locator("[data-nav-toggle]")).to_be_hidden()
                    context.close()

            # A suspended organization's page is styled: its stylesheet is served.
            elsewhere(
                services.tenant_suspend,
                actor=Actor.system("e2e"),
                tenant=furnished_org.tenant,
                reason="The suspended page's look is checked.",
            )
            for tag, width in WIDTHS.items():
                context, page = open_page(
                    browser, problems, viewport={"width": width, "height": 900}
                )
                response = page.goto(org_base + "/")
                assert response.status == 403
                expect(page.locator("body")).to_contain_text("suspended")
                background = page.evaluate(
                    "getComputedStyle(document.querySelector('.panel')).backgroundColor"
                )
                assert background == "rgb(255, 255, 255)", background
                check(page, "suspended", tag, problems, shots=shots)
                context.close()
        finally:
            browser.close()

    assert not problems, "\n".join(problems)

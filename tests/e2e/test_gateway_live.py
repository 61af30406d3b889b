"""A real browser watches an agent live: the reference runtime attaches (the instance turns
running without a reload), its metrics appear in the chart's table, and a config change shows at
once in two browser pages. Served by uvicorn (HTTP and WebSocket) on the real Redis."""

from __future__ import annotations

import asyncio
import re
import threading
from pathlib import Path

import pytest
from django.conf import settings

from gateway.runtime import AgentRuntime
from tests import live
from tests.conftest import PASSWORD
from tests.gateway.conftest import (  # noqa: F401 (fixtures)
    api_key,
    free_ports,
    in_org,
    make_agent,
    make_instance,
    pair,
    unblocked,
)

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("unblocked")]
ARTIFACTS = Path(settings.BASE_DIR) / "test-artifacts" / "e2e-gateway"


def _rehash_passwords(org) -> None:
    """The test session hashes with MD5, which the server's settings do not accept."""
    from django.contrib.auth.hashers import PBKDF2PasswordHasher

    from accounts.models import User

    hasher = PBKDF2PasswordHasher()
    in_org(
        org,
        lambda: User.objects.filter(pk__in=[org.member.pk, org.admin.pk]).update(
            password=hasher.encode(PASSWORD, hasher.salt())
        ),
    )


def test_the_agent_page_and_config_page_update_live(pair):  # noqa: F811
    from playwright.sync_api import expect, sync_playwright

    from agents import services
    from core.actors import Actor

    live.require_browser()
    (port,) = free_ports(1)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    a, _ = pair
    _rehash_passwords(a)
    agent = make_agent(a, name="Live watcher", type="live")
    instance = make_instance(a, agent)
    in_org(a, services.config_set, actor=Actor.system("e2e"), key="agents.live", value={"v": 1})
    runtime_key = api_key(a, ["agents:read", "agents:write"])
    log = (ARTIFACTS / "server.log").open("w")
    server = live.uvicorn(port, log=log, PORTAL_PORT=str(port), DEBUG="1")
    runtime = AgentRuntime(
        url=f"http://{a.tenant.host}:{port}",
        key=runtime_key,
        instance_id=str(instance.pk),
        heartbeat_seconds=0.5,
    )
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_until_complete, args=(runtime.run_forever(),))
    base = f"http://{a.tenant.host}:{port}"
    try:
        with sync_playwright() as playwright:
            browser = live.chromium(playwright)
            try:
                pages = []
                for user in (a.member, a.admin):
                    page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
                    page.set_default_timeout(20_000)
                    page.goto(f"{base}/login/")
                    page.fill("input[name=username]", user.email)
                    page.fill("input[name=password]", PASSWORD)
                    page.click("form button[type=submit]")
                    page.wait_for_url(f"{base}/")
                    pages.append(page)
                watcher, editor = pages
                expect(watcher.locator("[data-live-feed]")).to_be_visible()
                watcher.goto(f"{base}/agents/{agent.pk}/")
                row = watcher.locator(f'tr[data-instance="{instance.pk}"]')
                expect(row).to_have_attribute("data-status", "pending")
                expect(watcher.locator("body[data-live-ready]")).to_have_count(1)
                thread.start()  # the runtime attaches now, while the page is open
                expect(row).to_have_attribute("data-status", "running")
                metrics = watcher.locator(f'[data-metrics-instance="{instance.pk}"]')
                expect(metrics).to_have_count(1)
                expect(watcher.locator("[data-chart] polyline")).to_have_count(1)
                watcher.screenshot(path=str(ARTIFACTS / "01-agent-live.png"), full_page=True)

                # A config change saved in one browser (the admin's) shows at once in the other.
                watcher.goto(f"{base}/config/")
                editor.goto(f"{base}/config/")
                for page in (watcher, editor):
                    expect(page.locator("body[data-live-ready]")).to_have_count(1)
                editor.fill("#id_key", "agents.live")
                editor.fill("#id_value", '{"v": 2}')
                editor.click("[data-config-form] button[type=submit]")
                cell = watcher.locator('tr[data-key="agents.live"] pre')
                expect(cell).to_contain_text('"v": 2')
                expect(watcher.locator('tr[data-key="agents.live"]')).to_have_attribute(
                    "data-live-updated", re.compile(r"^\d+$")
                )
                watcher.screenshot(path=str(ARTIFACTS / "02-config-live.png"), full_page=True)
            finally:
                browser.close()
    finally:
        if thread.is_alive():
            loop.call_soon_threadsafe(runtime.stopping.set)
            thread.join(timeout=15)
        live.stop(server)
        log.close()

"""A real browser keeps an agent's page open while instances come and go elsewhere (the API,
another tab, the reference runtime): rows appear, change and disappear, the status badge and
the Start button follow the pool, and a pending instance shows the command that serves it,
which `run_agent --agent` now uses (it takes the pending instance instead of starting another).
Served by uvicorn (HTTP and WebSocket) on the real Redis."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
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
ARTIFACTS = Path(settings.BASE_DIR) / "test-artifacts" / "e2e-agent-live"


def elsewhere(function, *args, **kwargs):
    """Run a database call in another thread: Playwright's sync API keeps an event loop running
    in this one, where Django refuses database access."""
    from django.db import connection

    def call():
        try:
            return function(*args, **kwargs)
        finally:
            connection.close()

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(call).result()


def test_instances_started_and_stopped_elsewhere_show_live(pair):  # noqa: F811
    from django.contrib.auth.hashers import PBKDF2PasswordHasher
    from playwright.sync_api import expect, sync_playwright

    from accounts.models import User
    from agents import services
    from agents.models import AgentInstance
    from core.actors import Actor

    live.require_browser()
    (port,) = free_ports(1)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    a, _ = pair
    system = Actor.system("e2e")
    hasher = PBKDF2PasswordHasher()
    in_org(
        a,
        lambda: User.objects.filter(pk=a.member.pk).update(
            password=hasher.encode(PASSWORD, hasher.salt())
        ),
    )
    # A pool with room for one instance: the Start button must follow it.
    services.organization_limits_set(actor=system, tenant=a.tenant, overrides={"max_instances": 1})
    agent = make_agent(a, name="Watched", type="watched")
    runtime_key = api_key(a, ["agents:read", "agents:write"])
    log = (ARTIFACTS / "server.log").open("w")
    server = live.uvicorn(port, log=log, PORTAL_PORT=str(port), DEBUG="1")
    base = f"http://{a.tenant.host}:{port}"
    loop = asyncio.new_event_loop()
    runtime = None
    thread = None
    try:
        with sync_playwright() as playwright:
            browser = live.chromium(playwright)
            try:
                context = browser.new_context(viewport={"width": 1280, "height": 900})
                page = context.new_page()
                page.set_default_timeout(20_000)
                page.goto(f"{base}/login/")
                page.fill("input[name=username]", a.member.email)
                page.fill("input[name=password]", PASSWORD)
                page.click(".panel button[type=submit]")
                page.wait_for_url(f"{base}/")
                page.goto(f"{base}/agents/{agent.pk}/")
                expect(page.locator("body[data-live-ready]")).to_have_count(1)
                start = page.locator("[data-start-instance]")
                badge = page.locator('[data-live-region="agent-status"] .badge')
                expect(start).to_be_enabled()
                expect(badge).to_have_text("Idle")
                expect(page.locator("tr[data-instance]")).to_have_count(0)

                # Started elsewhere (the API, another tab): the row appears, pending, with the
                # exact command that serves it; the pool is full, so Start turns off.
                instance = elsewhere(make_instance, a, agent)
                row = page.locator(f'tr[data-instance="{instance.pk}"]')
                expect(row).to_have_attribute("data-status", "pending")
                waiting = page.locator(f'tr[data-waiting-for="{instance.pk}"]')
                command = (
                    f"manage.py run_agent --url {base} --key <API key> --instance {instance.pk}"
                )
                expect(waiting).to_contain_text(command)
                expect(badge).to_have_text("Pending")
                expect(start).to_be_disabled()
                expect(page.locator("[data-start-blocker]")).to_contain_text("1 of 1 instances")
                waiting.locator(".copy-button").click()
                # The copy resolves a promise: wait for it rather than read at once (a race).
                page.wait_for_function("text => window.agentplaneCopied === text", arg=command)
                expect(waiting.locator(".copy-button")).to_have_text("Copied")
                page.screenshot(path=str(ARTIFACTS / "01-pending.png"), full_page=True)

                # `run_agent --agent` takes that pending instance rather than starting another.
                runtime = elsewhere(
                    AgentRuntime.for_agent,
                    url=base,
                    key=runtime_key,
                    agent_id=str(agent.pk),
                    heartbeat_seconds=0.5,
                )
                assert runtime.instance_id == str(instance.pk)
                count = elsewhere(in_org, a, AgentInstance.objects.filter(agent=agent).count)
                assert count == 1
                thread = threading.Thread(
                    target=loop.run_until_complete, args=(runtime.run_forever(),)
                )
                thread.start()
                expect(row).to_have_attribute("data-status", "running")
                expect(waiting).to_have_count(0)
                expect(badge).to_have_text("Running")
                page.screenshot(path=str(ARTIFACTS / "02-running.png"), full_page=True)

                # Stopped elsewhere: the row leaves the table (for "Stopped recently"), the
                # resources return, and Start works again.
                elsewhere(
                    in_org,
                    a,
                    services.instance_stop,
                    actor=system,
                    agent_id=agent.pk,
                    instance_id=instance.pk,
                )
                expect(
                    page.locator(f'#instances > table tr[data-instance="{instance.pk}"]')
                ).to_have_count(0)
                expect(page.locator(".stopped-instances summary")).to_contain_text("1")
                expect(badge).to_have_text("Idle")  # the runtime confirmed the stop
                expect(start).to_be_enabled()
                expect(page.locator('[data-meter="instances"] .meter-value').first).to_have_text(
                    "0 / 1"
                )
                page.screenshot(path=str(ARTIFACTS / "03-stopped.png"), full_page=True)
            finally:
                browser.close()
    finally:
        if runtime is not None and thread is not None and thread.is_alive():
            loop.call_soon_threadsafe(runtime.stopping.set)
            thread.join(timeout=15)
        live.stop(server)
        log.close()

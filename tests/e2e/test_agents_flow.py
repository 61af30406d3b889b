"""A real browser creates an agent, starts two instances, watches the pool bars move, stops one."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest
from django.conf import settings

from tests.conftest import PASSWORD

pytestmark = pytest.mark.e2e

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-sync"]
PORTS = range(8310, 8350)
ARTIFACTS = Path(settings.BASE_DIR) / "test-artifacts" / "e2e-agents"


@dataclass
class Server:
    port: int
    log: Path

    def url(self, slug: str, path: str = "/") -> str:
        return f"http://{slug}.localhost:{self.port}{path}"


def require_browser() -> None:
    if os.path.exists(CHROMIUM):
        return
    if os.environ.get("REQUIRE_BROWSER") == "1":
        pytest.fail(f"{CHROMIUM} is missing and REQUIRE_BROWSER=1")
    pytest.skip(f"{CHROMIUM} is missing")


def free_port() -> int:
    for port in PORTS:
        with socket.socket() as candidate:
            try:
                candidate.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    pytest.fail(f"no free port in {PORTS}")


def database_url() -> str:
    database = settings.DATABASES["default"]
    credentials = quote(database["USER"] or "", safe="")
    if database.get("PASSWORD"):
        credentials += ":" + quote(database["PASSWORD"], safe="")
    return (
        f"postgres://{credentials}@{database['HOST'] or '127.0.0.1'}:"
        f"{database['PORT'] or 5432}/{database['NAME']}"
    )


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
    from audit.actors import Actor
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
def server(small_org, db) -> Iterator[Server]:
    """The portal in a subprocess on the test database, serving `small_org`'s committed data.

    `db` comes after `small_org` (fixtures are set up in that order): pytest-django then builds
    the test database even when this test runs alone, and its transaction starts only after the
    organization is committed. This process writes nothing afterwards.
    """
    require_browser()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "REDIS_URL": settings.REDIS_URL,
        "PORTAL_PORT": str(port),
        "DEBUG": "1",
        "TENANT_CONTEXT_GUARD": "1",
        "SCHEMA_POOL_BACKGROUND_REFILL": "0",
        "PYTHONUNBUFFERED": "1",
    }
    served = Server(port=port, log=ARTIFACTS / "server.log")
    with served.log.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"],
            cwd=settings.BASE_DIR,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 45
            while True:
                if process.poll() is not None:
                    pytest.fail(f"the server exited:\n{served.log.read_text()[-3000:]}")
                request = urllib.request.Request(
                    f"http://127.0.0.1:{port}/login/",
                    headers={"Host": small_org.tenant.host + f":{port}"},
                )
                try:
                    with urllib.request.urlopen(request, timeout=2) as response:
                        if response.status == 200:
                            break
                except (urllib.error.URLError, ConnectionError, TimeoutError):
                    pass
                if time.monotonic() > deadline:
                    pytest.fail(f"the server did not answer:\n{served.log.read_text()[-3000:]}")
                time.sleep(0.2)
            yield served
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


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
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
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

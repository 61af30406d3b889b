"""A real browser signs up an organization, lands on its dashboard, invites a member, logs out."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest
from django.conf import settings

pytestmark = pytest.mark.e2e

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PORTS = range(8100, 8150)
ARTIFACTS = Path(settings.BASE_DIR) / "test-artifacts" / "e2e"
PASSWORD = "e2e-long-passphrase-2024"


@dataclass
class Server:
    port: int
    log: Path
    env: dict[str, str]

    def url(self, slug: str | None = None, path: str = "/") -> str:
        host = f"{slug}.localhost" if slug else "localhost"
        return f"http://{host}:{self.port}{path}"


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


def database_url_for_tests() -> str:
    """The test database (pytest-django's `test_…` name), as a URL for the server process."""
    database = settings.DATABASES["default"]
    credentials = quote(database["USER"] or "", safe="")
    if database.get("PASSWORD"):
        credentials += ":" + quote(database["PASSWORD"], safe="")
    host = database["HOST"] or "127.0.0.1"
    port = database["PORT"] or 5432
    return f"postgres://{credentials}@{host}:{port}/{database['NAME']}"


def wait_until_up(process: subprocess.Popen, server: Server) -> None:
    deadline = time.monotonic() + 45
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the server exited early:\n{server.log.read_text()[-3000:]}")
        request = urllib.request.Request(
            f"http://127.0.0.1:{server.port}/", headers={"Host": f"localhost:{server.port}"}
        )
        try:
            with urllib.request.urlopen(request, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.2)
    pytest.fail(f"the server did not answer:\n{server.log.read_text()[-3000:]}")


@pytest.fixture
def server(db) -> Iterator[Server]:
    """The portal in a subprocess, on the test database.

    `db` is here so that pytest-django creates the test database even when this test runs
    alone (it sets one up only for tests that use `db`). This process writes nothing; the
    server commits on its own connections, so its data is real and must be cleaned up.
    """
    require_browser()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database_url_for_tests(),
        "REDIS_URL": settings.REDIS_URL,
        "PORTAL_PORT": str(port),
        "DEBUG": "1",
        "TENANT_CONTEXT_GUARD": "1",
        "SCHEMA_POOL_BACKGROUND_REFILL": "0",
        "PYTHONUNBUFFERED": "1",
    }
    served = Server(port=port, log=ARTIFACTS / "server.log", env=env)
    with served.log.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"],
            cwd=settings.BASE_DIR,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_until_up(process, served)
            yield served
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


DELETE_SCRIPT = """
from audit.actors import Actor
from tenants import services
from tenants.models import Tenant

tenant = Tenant.objects.filter(slug=SLUG).first()
if tenant is not None:
    services.tenant_delete(actor=Actor.system("e2e"), tenant=tenant)
    print("deleted", tenant.slug)
"""


def delete_organization(server: Server, slug: str) -> str:
    """Delete the organization the browser created, committed, from another process: this
    test's own connection is inside the `db` fixture's transaction, which is rolled back."""
    result = subprocess.run(
        [
            sys.executable,
            "manage.py",
            "shell",
            "-v",
            "0",
            "-c",
            f"SLUG = {slug!r}\n{DELETE_SCRIPT}",
        ],
        cwd=settings.BASE_DIR,
        env=server.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.strip()


def test_sign_up_land_on_the_dashboard_invite_and_log_out(server):
    from playwright.sync_api import expect, sync_playwright

    suffix = uuid.uuid4().hex[:8]
    name, slug = f"E2E Org {suffix}", f"e2e-org-{suffix}"
    invitee = f"new-{suffix}@example.test"

    def shot(page, step: str) -> None:
        page.screenshot(path=str(ARTIFACTS / f"{step}.png"), full_page=True)

    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
            )
            try:
                page = browser.new_context(viewport={"width": 1280, "height": 800}).new_page()
                page.set_default_timeout(20_000)

                # Sign up on the public host; the address is suggested from the name.
                page.goto(server.url(path="/signup/"))
                shot(page, "01-signup")
                page.fill("#id_name", name)
                expect(page.locator("#id_slug")).to_have_value(slug)
                page.select_option("#id_region", "eu-west-1")
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
        deleted = delete_organization(server, slug)
    assert deleted == f"deleted {slug}"

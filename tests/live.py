"""Helpers for tests that run the project in another process on this session's test database.

The test database exists only once `django_db_setup` has run: a fixture that starts a process
requests it (directly or through `scratch_org`) before calling these helpers.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest
from django.conf import settings

CHROMIUM = "/usr/bin/chromium"
# Debian's Chromium, headless, as root, without the background traffic this machine refuses.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def chromium(playwright):
    """Launch Debian's Chromium through Playwright (skips or fails without it: require_browser)."""
    require_browser()
    return playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)


def require_browser() -> None:
    """Skip the test when Chromium is missing, or fail it when REQUIRE_BROWSER=1 (CI)."""
    if os.path.exists(CHROMIUM):
        return
    if os.environ.get("REQUIRE_BROWSER") == "1":
        pytest.fail(f"{CHROMIUM} is missing and REQUIRE_BROWSER=1")
    pytest.skip(f"{CHROMIUM} is missing")


def free_port(ports: range) -> int:
    """The first port of the test's own range that nothing listens on."""
    for port in ports:
        with socket.socket() as candidate:
            try:
                candidate.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    pytest.fail(f"no free port in {ports}")


def database_url() -> str:
    """The test database (pytest-django's `test_…` name), as a URL for another process."""
    database = settings.DATABASES["default"]
    credentials = quote(database["USER"] or "", safe="")
    if database.get("PASSWORD"):
        credentials += ":" + quote(database["PASSWORD"], safe="")
    host = database["HOST"] or "127.0.0.1"
    port = database["PORT"] or 5432
    return f"postgres://{credentials}@{host}:{port}/{database['NAME']}"


def environment(**overrides: str) -> dict[str, str]:
    """This process's environment, pointed at the test database and Redis, plus `overrides`."""
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "portal.settings",
        "DATABASE_URL": database_url(),
        "REDIS_URL": settings.REDIS_URL,
        "TENANT_CONTEXT_GUARD": "1",
        "SCHEMA_POOL_BACKGROUND_REFILL": "0",
        # Not this process's in-transaction "immediate" (tests/conftest.py): the production
        # default (settings: "thread", sealed after commit), unless the caller's own environment
        # chose a mode.
        # Test servers speak plain HTTP, also with DEBUG=0 (production would redirect to HTTPS).
        "SECURE_SSL_REDIRECT": "0",
        **overrides,
    }


def python(script: str, *args: str) -> subprocess.Popen:
    """A Python process running `script` (which sets Django up itself), talking over its
    stdin and stdout in text."""
    return subprocess.Popen(
        [sys.executable, "-c", script, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=environment(),
        cwd=settings.BASE_DIR,
    )


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def wait_for_port(process: subprocess.Popen, port: int, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the server on {port} did not start") from None
            time.sleep(0.1)


@dataclass
class Server:
    """A portal served by `runserver` in another process."""

    port: int
    log: Path

    def url(self, slug: str | None = None, path: str = "/") -> str:
        host = f"{slug}.localhost" if slug else "localhost"
        return f"http://{host}:{self.port}{path}"


@contextmanager
def runserver(
    ports: range, *, log: Path, ready_host: str = "localhost", ready_path: str = "/"
) -> Iterator[Server]:
    """The portal (DEBUG, console email into `log`) on a free port of `ports`, once
    `ready_path` on `ready_host` answers 200; stopped afterwards."""
    port = free_port(ports)
    env = environment(DEBUG="1", PORTAL_PORT=str(port), PYTHONUNBUFFERED="1")
    served = Server(port=port, log=log)
    with log.open("w") as output:
        process = subprocess.Popen(
            [sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"],
            cwd=settings.BASE_DIR,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
        try:
            _wait_for_page(process, served, f"{ready_host}:{port}", ready_path)
            yield served
        finally:
            stop(process)


def _wait_for_page(process: subprocess.Popen, server: Server, host: str, path: str) -> None:
    deadline = time.monotonic() + 45
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the server exited early:\n{server.log.read_text()[-3000:]}")
        request = urllib.request.Request(
            f"http://127.0.0.1:{server.port}{path}", headers={"Host": host}
        )
        try:
            with urllib.request.urlopen(request, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.2)
    pytest.fail(f"the server did not answer:\n{server.log.read_text()[-3000:]}")


def uvicorn(port: int, *, log=None, **env: str) -> subprocess.Popen:
    """The whole ASGI app (portal, API, WebSocket gateway) under uvicorn on `port`, answering.

    Stop it with `stop`. `env` overrides the environment (for example PORTAL_PORT, DEBUG).
    """
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "portal.asgi:application", "--host", "127.0.0.1"]
        + ["--port", str(port), "--ws", "websockets-sansio", "--log-level", "warning"],
        cwd=settings.BASE_DIR,
        env=environment(**env),
        stdout=log,
        stderr=subprocess.STDOUT if log is not None else None,
    )
    wait_for_port(process, port)
    return process


@contextmanager
def gunicorn(
    port: int, *, workers: int = 2, extra_env: dict[str, str] | None = None
) -> Iterator[str]:
    """The portal under gunicorn (DEBUG off) on `port`; yields its base URL."""
    env = environment(
        DEBUG="0",
        # Same issuer as tokens minted in the test process.
        PORTAL_SCHEME=settings.PORTAL_SCHEME,
        PORTAL_PORT=settings.PORTAL_PORT,
        SECRET_KEY=settings.SECRET_KEY,
        LOG_LEVEL="ERROR",
        **(extra_env or {}),
    )
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "portal.wsgi:application",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            str(workers),
            "--log-level",
            "warning",
        ],
        cwd=settings.BASE_DIR,
        env=env,
    )
    try:
        wait_for_port(process, port)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(process)

"""A real server in a subprocess (gunicorn) against the test database, for tests over the wire."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from django.conf import settings

ROOT = Path(__file__).resolve().parents[2]


def database_url() -> str:
    """The URL of the database this test process uses (pytest-django's `test_...`)."""
    db = settings.DATABASES["default"]
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    return f"postgres://{db['USER']}{password}@{db['HOST']}:{db['PORT']}/{db['NAME']}"


@contextmanager
def gunicorn(
    port: int, *, workers: int = 2, extra_env: dict[str, str] | None = None
) -> Iterator[str]:
    env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "DEBUG": "0",
        # Same issuer as tokens minted in the test process.
        "PORTAL_SCHEME": settings.PORTAL_SCHEME,
        "PORTAL_PORT": settings.PORTAL_PORT,
        "SECRET_KEY": settings.SECRET_KEY,
        "TENANT_CONTEXT_GUARD": "1",
        "SCHEMA_POOL_BACKGROUND_REFILL": "0",
        "LOG_LEVEL": "ERROR",
        **(extra_env or {}),
    }
    process = subprocess.Popen(  # noqa: S603
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
        cwd=ROOT,
        env=env,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the test server did not start") from None
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()

"""Development-only state under `.data/`: the generated secret key and the embedded PostgreSQL."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = Path(os.environ.get("AGENTPLANE_DATA_DIR", BASE_DIR / ".data"))


def development_secret_key() -> str:
    """Return the development secret, generating it into `.data/` on first use (never committed)."""
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    path = DATA_DIR / "secret_key"
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(50))
    return path.read_text().strip()


def embedded_database_url() -> str:
    """Start (or reuse) the private PostgreSQL under `.data/pg` and return its URL.

    The server outlives this process on purpose (`cleanup_mode=None`), so that the web server,
    management commands and tests share it; `make demo-stop` stops it.
    """
    import warnings

    # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, root shells): harmless here.
    warnings.filterwarnings("ignore", module="platformdirs")
    import pgserver  # imported lazily: only needed when no DATABASE_URL is set

    DATA_DIR.mkdir(parents=True, exist_ok=True)
    server = pgserver.get_server(DATA_DIR / "pg", cleanup_mode=None)
    server.psql("SELECT 1")
    exists = server.psql("SELECT 1 FROM pg_database WHERE datname = 'agentplane'")
    if "(1 row)" not in exists:
        server.psql("CREATE DATABASE agentplane")
    return server.get_uri("agentplane")


def stop_embedded_database() -> None:
    """Stop the private PostgreSQL under `.data/pg` (`make demo-stop`); its data stays."""
    from pgserver._commands import pg_ctl

    pgdata = DATA_DIR / "pg"
    if not (pgdata / "postmaster.pid").exists():
        print("embedded PostgreSQL is not running")
        return
    # pgserver runs PostgreSQL as the `pgserver` system user when started by root.
    user = "pgserver" if os.geteuid() == 0 else None
    pg_ctl(["-w", "stop"], pgdata=pgdata, user=user)
    print("embedded PostgreSQL stopped")

"""Shared helpers for the benchmarks: bench databases, environment, machine facts, statistics."""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable

# Where the benches put their databases (created and shared-migrated on first use, then reused).
POSTGRES_URL = os.environ.get("BENCH_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432")
DATABASE_PREFIX = os.environ.get("BENCH_DATABASE_PREFIX", "agentplane_bench")
# Redis as in production (routing invalidation, cache, channel layer); empty: in-process only.
REDIS_URL = os.environ.get("BENCH_REDIS_URL", os.environ.get("REDIS_URL", ""))


def database_url(suffix: str) -> str:
    return f"{POSTGRES_URL}/{DATABASE_PREFIX}_{suffix}"


def django_env(database: str, **extra: str) -> dict[str, str]:
    """The environment a bench process runs Django with: production-like, guard off."""
    env = dict(os.environ)
    env.update(
        DATABASE_URL=database,
        REDIS_URL=REDIS_URL,
        DJANGO_SETTINGS_MODULE="portal.settings",
        DEBUG="0",
        SECRET_KEY=os.environ.get("BENCH_SECRET_KEY", "bench-only-not-a-secret-" + "x" * 32),
        TENANT_CONTEXT_GUARD="0",
        SCHEMA_POOL_BACKGROUND_REFILL="0",
        LOG_LEVEL="WARNING",
        # Plain HTTP on loopback (TLS ends at the proxy in production): no redirect to https.
        SECURE_SSL_REDIRECT="0",
        # WhiteNoise warns that collectstatic has not run: irrelevant to the benches.
        PYTHONWARNINGS="ignore:No directory at",
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")])),
    )
    env.update(extra)
    return env


def ensure_database(database: str) -> None:
    """Create the database if missing and migrate its shared (public) schema.

    A bench database whose recorded migrations no longer match the code (a migration renamed or
    rewritten) cannot be migrated forward: it is dropped and built again.
    """
    create_database(database)
    command = [PYTHON, "manage.py", "migrate_schemas", "--shared", "-v0"]
    if subprocess.run(command, cwd=ROOT, env=django_env(database)).returncode != 0:
        print(f"{database}: cannot migrate forward; rebuilding it", file=sys.stderr)
        drop_database(database)
        create_database(database)
        subprocess.run(command, cwd=ROOT, env=django_env(database), check=True)


def create_database(database: str) -> None:
    import psycopg

    server, name = database.rsplit("/", 1)
    with psycopg.connect(f"{server}/postgres", autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{name}"')


def drop_database(database: str) -> None:
    import psycopg

    server, name = database.rsplit("/", 1)
    with psycopg.connect(f"{server}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def machine_facts(database: str | None = None) -> dict[str, str]:
    facts = {
        "nproc": str(os.cpu_count()),
        "memory": _memory(),
        "arch": platform.machine(),
        "python": platform.python_version(),
        "date": subprocess.run(["date"], capture_output=True, text=True).stdout.strip(),
    }
    if database:
        import psycopg

        with psycopg.connect(database) as conn:
            facts["postgresql"] = conn.execute("SHOW server_version").fetchone()[0]
    return facts


def _memory() -> str:
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    return "unknown"


def percentile(values: list[float], fraction: float) -> float:
    """Linear interpolation between closest ranks (NumPy's default)."""
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    position = (len(ordered) - 1) * fraction
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def median(values: list[float]) -> float:
    return statistics.median(values)

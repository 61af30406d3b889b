"""PostgreSQL memory per connection as it touches many organizations' schemas.

Builds a throwaway database with N copies of a migrated tenant schema (the DDL of a real one,
from `pg_dump --schema-only`, renamed), then, in one connection, does what a request does in
each schema it serves (SET search_path, then the reads of a typical API request and a write
path's tables) and samples the backend's memory as it goes: its resident set from
/proc/<pid>/status (RssAnon: private memory, not the shared buffers) and PostgreSQL's own
accounting (pg_backend_memory_contexts: CacheMemoryContext holds the relation and catalog caches
that grow with every table touched). The database is dropped afterwards unless --keep.

    .venv/bin/python bench/pg_memory.py --schemas 1000 [--source-db URL --source-schema t_x]

Needs to run on the PostgreSQL host (it reads /proc of the backend).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import POSTGRES_URL, ROOT, create_database, drop_database, machine_facts  # noqa: E402

RESULTS = ROOT / "bench" / "results"
# The tables a request of each kind reads or writes (an agent list, an instance start, a login).
TOUCHED = [
    "agents_agent",
    "agents_agentinstance",
    "agents_resourcepool",
    "audit_auditevent",
    "audit_alertrule",
    "accounts_user",
    "credentials_apikey",
    "django_session",
]


def backend_memory(conn) -> dict[str, float]:
    pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
    status = Path(f"/proc/{pid}/status").read_text()
    rss = {
        key: int(re.search(rf"^{key}:\s+(\d+) kB", status, re.M).group(1)) / 1024
        for key in ("VmRSS", "RssAnon", "RssShmem")
    }
    cache, total = conn.execute(
        "SELECT sum(total_bytes) FILTER (WHERE name = 'CacheMemoryContext'"
        " OR parent = 'CacheMemoryContext'), sum(total_bytes) FROM pg_backend_memory_contexts"
    ).fetchone()
    return {
        "rss_mb": rss["VmRSS"],
        "rss_anon_mb": rss["RssAnon"],
        "rss_shmem_mb": rss["RssShmem"],
        "cache_contexts_mb": int(cache or 0) / 2**20,
        "all_contexts_mb": int(total) / 2**20,
    }


def build(url: str, ddl: str, source_schema: str, count: int) -> float:
    import psycopg

    started = time.monotonic()
    # The source schema's name as a whole word (CREATE SCHEMA x; x.table; "x").
    pattern = re.compile(rf"(?<!\w){re.escape(source_schema)}(?!\w)")
    with psycopg.connect(url, autocommit=True) as conn:
        existing = conn.execute(
            "SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'm\\_%'"
        ).fetchone()[0]
        for number in range(existing, count):
            schema = f"m_{number:05d}"
            conn.execute(pattern.sub(schema, ddl))
            if number % 100 == 99:
                print(f"  {number + 1} schemas", file=sys.stderr, flush=True)
    return time.monotonic() - started


def schema_ddl(source_db: str, schema: str) -> str:
    dump = subprocess.run(
        ["pg_dump", "--schema-only", "--no-owner", "--no-privileges", "-n", schema, source_db],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    # Keep the statements; drop psql meta-commands and settings that would apply to the session.
    lines = [
        line
        for line in dump.splitlines()
        if not line.startswith(("\\", "SET ", "SELECT pg_catalog.set_config", "--"))
    ]
    return "\n".join(lines)


def measure(url: str, count: int, checkpoints: list[int]) -> list[dict]:
    import psycopg

    samples = []
    with psycopg.connect(url, autocommit=True) as conn:
        samples.append({"schemas_touched": 0, **backend_memory(conn)})
        for number in range(count):
            schema = f"m_{number:05d}"
            conn.execute(f'SET search_path = "{schema}", public')
            for table in TOUCHED:
                conn.execute(f"SELECT * FROM {table} LIMIT 1").fetchall()
            if number + 1 in checkpoints:
                samples.append({"schemas_touched": number + 1, **backend_memory(conn)})
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--schemas", type=int, default=1000)
    parser.add_argument("--database", default="agentplane_w13_mem")
    parser.add_argument("--source-db", required=True, help="a database with a tenant schema")
    parser.add_argument("--source-schema", required=True)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    url = f"{POSTGRES_URL}/{args.database}"
    create_database(url)
    try:
        ddl = schema_ddl(args.source_db, args.source_schema)
        relations = len(re.findall(r"^CREATE (?:TABLE|INDEX|UNIQUE INDEX|SEQUENCE)", ddl, re.M))
        build_seconds = build(url, ddl, args.source_schema, args.schemas)
        points = sorted(
            {n for n in (1, 10, 100, 250, 500, 1000, 2500, 5000, 10000) if n <= args.schemas}
            | {args.schemas}
        )
        # Two passes in fresh connections: the second shows a connection's cost once warm.
        samples = measure(url, args.schemas, points)
        again = measure(url, min(args.schemas, 100), [min(args.schemas, 100)])
        import psycopg

        with psycopg.connect(url) as conn:
            pg_class = conn.execute("SELECT count(*) FROM pg_class").fetchone()[0]
    finally:
        if not args.keep:
            drop_database(url)
    result = {
        "args": vars(args),
        "facts": machine_facts(),
        "relations_per_schema_in_ddl": relations,
        "pg_class_rows": pg_class,
        "build_seconds": build_seconds,
        "tables_touched_per_schema": TOUCHED,
        "samples": samples,
        "fresh_connection_100": again,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"pg_memory-{args.schemas}.json").write_text(json.dumps(result, indent=1))
    print(json.dumps({k: v for k, v in result.items() if k != "facts"}, indent=1))


if __name__ == "__main__":
    main()

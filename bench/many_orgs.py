"""Many organizations: request p99 at N organizations beside 10, and memory per connection.

    .venv/bin/python bench/many_orgs.py build --orgs 10000 [--until 12:15] [--batch 5]
    .venv/bin/python bench/many_orgs.py measure [--requests 3000] [--rounds 6]
    .venv/bin/python bench/many_orgs.py drop

`build` makes the database `<prefix>_orgs` (the shard `default`): its public schema migrated, one
organization provisioned by the product (`provision_tenant`, the template), then copies of the
template's schema made in bulk: the template's DDL from `pg_dump --schema-only`, renamed per
schema, applied a few schemas per transaction (each new relation holds a lock until commit:
~150 per schema, and the server's shared lock table has 64 x max_connections entries), with the
template's users copied in and the directory rows (organization and domain, copied from the
template's with a new slug, schema and public id). Provisioning would take ~1 s of migrations
per schema; this takes a fraction of that. It resumes where it stopped and stops at `--until`
(UTC, HH:MM) whatever the count, or when the server's data directory has less than 20 GiB free.

`measure` runs, in one process with the product's settings and middleware, bench/routing_app's
`/bench/query/` (one query in the organization's schema) through Django's test client (WSGI, no
network), each request for a random organization: variant `10` picks among 10 organizations,
variant `N` among all of them. Rounds alternate which variant goes first. Each variant has its
own process-wide state in the same process (the routing cache, the one connection), so both
variants' requests share the connection as a web worker's would. First a cold pass (every
organization of variant N touched for the first time: the catalog caches and the routing cache
fill), then warm rounds. Reported: p50/p99 per round and the ratio of the medians of the rounds'
p99. The worker's CONN_MAX_AGE is an hour (`--conn-max-age`), so that one connection serves
every round, as a busy worker's would between recycles. Memory: the connection's backend after
the warm rounds (RssAnon, CacheMemoryContext), and a
fresh connection that touches K schemas (bench/pg_memory.py's tables) for K up to N.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    PYTHON,
    ROOT,
    database_url,
    django_env,
    drop_database,
    ensure_database,
    machine_facts,
    median,
    percentile,
)
from pg_memory import TOUCHED, backend_memory, schema_ddl  # noqa: E402

TEMPLATE = "orgs-template"
TEMPLATE_SCHEMA = "t_orgs_template"
PASSWORD = "bench-password-correct-horse"
RESULTS = ROOT / "bench" / "results"
MIN_FREE_GB = 20


def slug_of(number: int) -> str:
    return f"o-{number:05d}"


def schema_of(number: int) -> str:
    return f"t_o_{number:05d}"


def provision_template(database: str) -> None:
    code = f"""
import django
django.setup()
from core.actors import Actor
from organizations import services
from tenants import context
from tenants.models import Tenant
with context.public_context():
    if not Tenant.objects.filter(slug={TEMPLATE!r}).exists():
        services.provision_tenant(actor=Actor.system("bench"), slug={TEMPLATE!r}, name="Template",
                                  owner_email="owner@template.test", owner_password={PASSWORD!r})
"""
    subprocess.run([PYTHON, "-c", code], cwd=ROOT, env=django_env(database), check=True)


def build(database: str, count: int, until: dt.datetime, batch: int) -> dict:
    import psycopg

    ensure_database(database)
    provision_template(database)
    ddl = schema_ddl(database, TEMPLATE_SCHEMA)
    pattern = re.compile(rf"(?<!\w){re.escape(TEMPLATE_SCHEMA)}(?!\w)")
    started = time.monotonic()
    with psycopg.connect(database) as conn:
        conn.execute("SET synchronous_commit = off")  # this session only
        columns = [
            row[0]
            for row in conn.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_schema = 'public' "
                "AND table_name = 'tenants_tenant' AND column_name <> 'id' "
                "ORDER BY ordinal_position"
            )
        ]
        replaced = {
            "public_id": "gen_random_uuid()",
            "slug": "%(slug)s",
            "name": "%(slug)s",
            "schema_name": "%(schema)s",
            "created_at": "now()",
        }
        select = ", ".join(replaced.get(column, column) for column in columns)
        insert_tenant = (
            f"INSERT INTO tenants_tenant ({', '.join(columns)}) SELECT {select} "  # noqa: S608
            "FROM tenants_tenant WHERE slug = %(template)s RETURNING id"
        )
        template_domain = conn.execute(
            "SELECT d.domain FROM tenants_domain d JOIN tenants_tenant t ON t.id = d.tenant_id "
            "WHERE t.slug = %s AND d.is_primary",
            [TEMPLATE],
        ).fetchone()[0]
        done = conn.execute(
            "SELECT count(*) FROM tenants_tenant WHERE slug LIKE 'o-%%'"
        ).fetchone()[0]
        conn.commit()
        number = done
        while number < count and dt.datetime.now(dt.UTC) < until and _disk_ok(conn):
            batch_started = time.monotonic()
            with conn.transaction():
                for number in range(number, min(number + batch, count)):  # noqa: B020
                    slug, schema = slug_of(number), schema_of(number)
                    conn.execute(pattern.sub(schema, ddl))
                    conn.execute(
                        f'INSERT INTO "{schema}".accounts_user '  # noqa: S608
                        f'SELECT * FROM "{TEMPLATE_SCHEMA}".accounts_user'
                    )
                    tenant_id = conn.execute(
                        insert_tenant, {"slug": slug, "schema": schema, "template": TEMPLATE}
                    ).fetchone()[0]
                    conn.execute(
                        "INSERT INTO tenants_domain (domain, tenant_id, is_primary) "
                        "VALUES (%s, %s, true)",
                        [template_domain.replace(TEMPLATE, slug, 1), tenant_id],
                    )
                number += 1
            print(
                f"{dt.datetime.now(dt.UTC):%H:%M:%S} {number} organizations "
                f"({(time.monotonic() - batch_started) / batch * 1000:.0f} ms each)",
                file=sys.stderr,
                flush=True,
            )
    return {"organizations": number, "build_seconds": time.monotonic() - started}


def _disk_ok(conn) -> bool:
    """Whether the server's data directory still has MIN_FREE_GB free (same host)."""
    data = conn.execute("SHOW data_directory").fetchone()[0]
    conn.commit()
    free = shutil.disk_usage(data).free / 2**30
    if free < MIN_FREE_GB:
        print(f"stopping: {free:.1f} GiB free under {data}", file=sys.stderr, flush=True)
    return free >= MIN_FREE_GB


def worker(requests: int, rounds: int) -> dict:
    import django

    django.setup()
    from django.db import connection
    from django.test import Client

    from tenants import context
    from tenants.models import Tenant

    with context.public_context():
        hosts = [t.host for t in Tenant.objects.filter(slug__startswith="o-").order_by("slug")]
    client = Client()
    rng = random.Random(16)  # noqa: S311 (benchmark sampling)

    def timed(pool: list[str], count: int) -> list[float]:
        latencies = []
        for _ in range(count):
            host = rng.choice(pool)
            started = time.perf_counter()
            response = client.get("/bench/query/", HTTP_HOST=host)
            latencies.append(time.perf_counter() - started)
            if response.status_code != 200:
                raise RuntimeError(f"{host}: {response.status_code} {response.content[:200]!r}")
        return latencies

    def connection_memory() -> dict:
        with context.public_context():
            connection.ensure_connection()
            return backend_memory(_Psycopg(connection))

    pools = {"10": hosts[:10], "N": hosts}
    timed(pools["10"], 200)
    before = connection_memory()
    # Cold pass: every organization once, in order (first touch: routing cache, catalog caches).
    cold_started = time.perf_counter()
    cold = []
    for host in hosts:
        started = time.perf_counter()
        client.get("/bench/query/", HTTP_HOST=host)
        cold.append(time.perf_counter() - started)
    cold_seconds = time.perf_counter() - cold_started
    after_cold = connection_memory()
    samples: dict[str, list[dict]] = {"10": [], "N": []}
    for round_number in range(rounds):
        order = ["10", "N"] if round_number % 2 == 0 else ["N", "10"]
        for variant in order:
            values = timed(pools[variant], requests)
            samples[variant].append(
                {
                    "p50_ms": percentile(values, 0.5) * 1000,
                    "p99_ms": percentile(values, 0.99) * 1000,
                    "mean_ms": sum(values) / len(values) * 1000,
                }
            )
            print(
                f"round {round_number + 1} {variant}: p50 {samples[variant][-1]['p50_ms']:.2f} ms"
                f" p99 {samples[variant][-1]['p99_ms']:.2f} ms",
                file=sys.stderr,
                flush=True,
            )
    after_rounds = connection_memory()
    p99 = {variant: median([s["p99_ms"] for s in samples[variant]]) for variant in samples}
    p50 = {variant: median([s["p50_ms"] for s in samples[variant]]) for variant in samples}
    return {
        "organizations": len(hosts),
        "requests_per_round": requests,
        "rounds": samples,
        "p99_median_ms": p99,
        "p50_median_ms": p50,
        "p99_ratio": p99["N"] / p99["10"],
        "p50_ratio": p50["N"] / p50["10"],
        "cold_pass": {
            "seconds": cold_seconds,
            "p50_ms": percentile(cold, 0.5) * 1000,
            "p99_ms": percentile(cold, 0.99) * 1000,
        },
        "web_connection_memory": {
            "after_10_orgs": before,
            "after_all_orgs_once": after_cold,
            "after_rounds": after_rounds,
        },
    }


class _Psycopg:
    """backend_memory() wants .execute(); Django's connection offers a cursor."""

    def __init__(self, connection) -> None:
        self.connection = connection

    def execute(self, sql: str):
        cursor = self.connection.cursor()
        cursor.execute(sql)
        return cursor


def memory_points(database: str, total: int) -> list[dict]:
    """A fresh connection touching K schemas (K = 10, 100, 1,000, ..., all): its memory."""
    import psycopg

    checkpoints = {k for k in (10, 100, 1000, 2500, 5000, 10000) if k <= total} | {total}
    samples = []
    with psycopg.connect(database, autocommit=True) as conn:
        samples.append({"schemas_touched": 0, **backend_memory(conn)})
        for number in range(total):
            conn.execute(f'SET search_path = "{schema_of(number)}", public')
            for table in TOUCHED:
                conn.execute(f"SELECT * FROM {table} LIMIT 1").fetchall()  # noqa: S608
            if number + 1 in checkpoints:
                samples.append({"schemas_touched": number + 1, **backend_memory(conn)})
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["build", "measure", "drop", "worker"])
    parser.add_argument("--orgs", type=int, default=10_000)
    parser.add_argument("--until", default="23:59", help="stop building at this UTC time")
    parser.add_argument("--batch", type=int, default=5)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument(
        "--conn-max-age",
        type=int,
        default=3600,
        help="the worker's CONN_MAX_AGE: long, so that one connection serves every round",
    )
    args = parser.parse_args()
    database = database_url("orgs")
    if args.action == "worker":
        print("RESULT " + json.dumps(worker(args.requests, args.rounds)), flush=True)
        return
    if args.action == "drop":
        drop_database(database)
        return
    RESULTS.mkdir(exist_ok=True)
    if args.action == "build":
        hour, minute = (int(part) for part in args.until.split(":"))
        until = dt.datetime.now(dt.UTC).replace(hour=hour, minute=minute, second=0)
        result = build(database, args.orgs, until, args.batch)
        (RESULTS / "many_orgs-build.json").write_text(json.dumps(result, indent=1))
        print(json.dumps(result))
        return
    env = django_env(
        database,
        DJANGO_SETTINGS_MODULE="routing_app.settings_routed",
        CONN_MAX_AGE=str(args.conn_max_age),
    )
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "bench"), env["PYTHONPATH"]])
    command = [PYTHON, __file__, "worker", "--requests", str(args.requests)]
    command += ["--rounds", str(args.rounds)]
    process = subprocess.run(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
    process.check_returncode()
    line = next(line for line in process.stdout.splitlines() if line.startswith("RESULT "))
    result = json.loads(line.removeprefix("RESULT "))
    result["fresh_connection_memory"] = memory_points(database, result["organizations"])
    result["facts"] = machine_facts(database)
    result["loadavg"] = Path("/proc/loadavg").read_text().split()[:3]
    result["command"] = "bench/many_orgs.py " + " ".join(sys.argv[1:])
    result["conn_max_age"] = args.conn_max_age
    (RESULTS / f"many_orgs-{result['organizations']}.json").write_text(json.dumps(result, indent=1))
    print(json.dumps({k: v for k, v in result.items() if k != "facts"}, indent=1))


if __name__ == "__main__":
    main()

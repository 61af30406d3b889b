"""Many organizations: request p99 at N organizations beside 10, and memory per connection.

    .venv/bin/python bench/many_orgs.py build --orgs 10000 [--until 12:15] [--batch 5] [--jobs 2]
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


def build(database: str, count: int, until: dt.datetime, batch: int, jobs: int) -> dict:
    import threading

    import psycopg

    ensure_database(database)
    provision_template(database)
    ddl = schema_ddl(database, TEMPLATE_SCHEMA)
    pattern = re.compile(rf"(?<!\w){re.escape(TEMPLATE_SCHEMA)}(?!\w)")
    started = time.monotonic()
    with psycopg.connect(database) as conn:
        columns = [
            row[0]
            for row in conn.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_schema = 'public' "
                "AND table_name = 'tenants_tenant' AND column_name <> 'id' "
                "ORDER BY ordinal_position"
            )
        ]
        template_domain = conn.execute(
            "SELECT d.domain FROM tenants_domain d JOIN tenants_tenant t ON t.id = d.tenant_id "
            "WHERE t.slug = %s AND d.is_primary",
            [TEMPLATE],
        ).fetchone()[0]
        # Resume: whatever is missing (a stopped build of several jobs can leave gaps).
        existing = {
            row[0] for row in conn.execute("SELECT slug FROM tenants_tenant WHERE slug LIKE 'o-%%'")
        }
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
    missing = [number for number in range(count) if slug_of(number) not in existing]
    built = [len(existing & {slug_of(n) for n in range(count)})]
    lock = threading.Lock()
    stop = threading.Event()

    def job(numbers: list[int]) -> None:
        with psycopg.connect(database) as conn:
            conn.execute("SET synchronous_commit = off")  # this session only
            conn.commit()
            for start in range(0, len(numbers), batch):
                if stop.is_set() or dt.datetime.now(dt.UTC) >= until or not _disk_ok(conn):
                    stop.set()
                    return
                chunk = numbers[start : start + batch]
                batch_started = time.monotonic()
                with conn.transaction():
                    for number in chunk:
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
                with lock:
                    built[0] += len(chunk)
                    print(
                        f"{dt.datetime.now(dt.UTC):%H:%M:%S} {built[0]} organizations "
                        f"({(time.monotonic() - batch_started) / len(chunk) * 1000:.0f} ms each"
                        f" in one of {jobs} jobs)",
                        file=sys.stderr,
                        flush=True,
                    )

    # Each job its own connection and its own numbers (interleaved: the build stays in order).
    threads = [threading.Thread(target=job, args=(missing[index::jobs],)) for index in range(jobs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {"organizations": built[0], "build_seconds": time.monotonic() - started, "jobs": jobs}


def _disk_ok(conn) -> bool:
    """Whether the server's data directory still has MIN_FREE_GB free (same host)."""
    data = conn.execute("SHOW data_directory").fetchone()[0]
    conn.commit()
    free = shutil.disk_usage(data).free / 2**30
    if free < MIN_FREE_GB:
        print(f"stopping: {free:.1f} GiB free under {data}", file=sys.stderr, flush=True)
    return free >= MIN_FREE_GB


def worker(
    requests: int, rounds: int, limit: int | None, gc_freeze: bool, count_misses: bool
) -> dict:
    import gc

    import django

    django.setup()
    from django.db import connection, transaction
    from django.db.backends.signals import connection_created
    from django.test import Client

    from tenants import context
    from tenants.models import Tenant

    with context.public_context():
        hosts = [t.host for t in Tenant.objects.filter(slug__startswith="o-").order_by("slug")]
    hosts = hosts[:limit] if limit else hosts
    client = Client()
    rng = random.Random(16)  # noqa: S311 (benchmark sampling)
    # Where each request's time goes: every statement on the wire (django-tenants' `SET
    # search_path` and Django's health check bypass Django's cursor wrapper: timed at psycopg's
    # cursor), and the garbage collector's pauses (gc.callbacks).
    spent = {"sql": 0.0, "set": 0.0, "statements": 0, "gc": 0.0, "gc2": 0}
    gc_started = [0.0]

    def on_gc(phase: str, info: dict) -> None:
        if phase == "start":
            gc_started[0] = time.perf_counter()
        else:
            spent["gc"] += time.perf_counter() - gc_started[0]
            spent["gc2"] += info["generation"] == 2

    gc.callbacks.append(on_gc)

    def timed_cursors(connection, **kwargs) -> None:
        base = connection.connection.cursor_factory

        class Timed(base):
            def execute(self, query, *args, **kwargs):
                started, gc_before = time.perf_counter(), spent["gc"]
                try:
                    return super().execute(query, *args, **kwargs)
                finally:
                    # A collection that ran inside the call is the collector's, not the wire's.
                    elapsed = time.perf_counter() - started - (spent["gc"] - gc_before)
                    spent["sql"] += elapsed
                    spent["statements"] += 1
                    if str(query).startswith("SET search_path"):
                        spent["set"] += elapsed

        connection.connection.cursor_factory = Timed
        backend[0] = Path(f"/proc/{connection.connection.info.backend_pid}/schedstat")

    # The backend's CPU time (ns on CPU, from the kernel's scheduler statistics: the bench runs
    # on the PostgreSQL host), read around each request: unlike wall time, it does not count the
    # time either process waited for a CPU on a loaded machine.
    backend: list[Path] = [Path("/dev/null")]

    def backend_cpu() -> float:
        return int(backend[0].read_text().split()[0]) / 1e9

    connection_created.connect(timed_cursors)
    with context.public_context():
        connection.close()  # reopen with the timed cursors
        connection.ensure_connection()

    def timed(pool: list[str], count: int, trace: list | None = None) -> list[float]:
        latencies = []
        for _ in range(count):
            host = rng.choice(pool)
            before = dict(spent)
            misses, after = -1, None
            pg_before = backend_cpu()
            if count_misses:
                # Diagnostic mode: the request inside a transaction (one more statement, BEGIN,
                # in the timing), then, untimed, how many catalog index scans it caused in this
                # backend: 0 when every relation and name it used was in the connection's caches.
                with transaction.atomic():
                    started, cpu_started = time.perf_counter(), time.thread_time()
                    response = client.get("/bench/query/", HTTP_HOST=host)
                    elapsed = time.perf_counter() - started
                    cpu = time.thread_time() - cpu_started
                    pg_cpu = backend_cpu() - pg_before
                    after = dict(spent)
                    with connection.cursor() as cursor:
                        cursor.execute(CATALOG_SCANS_IN_TRANSACTION)
                        misses = cursor.fetchone()[0]
            else:
                started, cpu_started = time.perf_counter(), time.thread_time()
                response = client.get("/bench/query/", HTTP_HOST=host)
                elapsed = time.perf_counter() - started
                cpu = time.thread_time() - cpu_started
                pg_cpu = backend_cpu() - pg_before
            latencies.append(elapsed)
            after = after or spent
            if trace is not None:
                trace.append(
                    (
                        elapsed,
                        after["sql"] - before["sql"],
                        after["set"] - before["set"],
                        after["gc"] - before["gc"],
                        after["gc2"] - before["gc2"],
                        after["statements"] - before["statements"],
                        misses,
                        cpu,
                        pg_cpu,
                    )
                )
            if response.status_code != 200:
                raise RuntimeError(f"{host}: {response.status_code} {response.content[:200]!r}")
        return latencies

    def catalog_scans() -> int:
        """This database's index scans of pg_class so far (relation cache and name lookups
        that missed: every backend of the database counts, so only meaningful when this worker
        is alone on it)."""
        with context.public_context():
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_stat_force_next_flush()")
            time.sleep(0.05)  # the flush happens when the backend goes idle
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT sum(idx_scan) FROM pg_stat_sys_indexes WHERE indexrelname IN "
                    "('pg_class_oid_index', 'pg_class_relname_nsp_index')"
                )
                return int(cursor.fetchone()[0])

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
    if gc_freeze:
        # What a worker does once warm (portal/gunicorn.conf.py): the long-lived objects (routing
        # cache, modules) move to the permanent generation, out of every later collection.
        gc.collect()
        gc.freeze()
    samples: dict[str, list[dict]] = {"10": [], "N": []}
    for round_number in range(rounds):
        order = ["10", "N"] if round_number % 2 == 0 else ["N", "10"]
        for variant in order:
            trace: list[tuple] = []
            scans_before = catalog_scans()
            values = timed(pools[variant], requests, trace)
            scans = catalog_scans() - scans_before
            samples[variant].append(
                {
                    "p50_ms": percentile(values, 0.5) * 1000,
                    "p99_ms": percentile(values, 0.99) * 1000,
                    "mean_ms": sum(values) / len(values) * 1000,
                    "pg_class_index_scans": scans,
                    **_breakdown(trace),
                }
            )
            sample = samples[variant][-1]
            print(
                f"round {round_number + 1} {variant}: p50 {sample['p50_ms']:.2f} ms"
                f" p99 {sample['p99_ms']:.2f} ms; CPU p50 {sample['cpu_p50_ms']:.3f}"
                f" p99 {sample['cpu_p99_ms']:.3f} ms (postgres p50"
                f" {sample['postgres_cpu_p50_ms']:.3f} p99 {sample['postgres_cpu_p99_ms']:.3f});"
                f" pg_class scans {scans};"
                f" median request: sql {sample['median_sql_ms']:.2f} ms,"
                f" python {sample['median_python_ms']:.2f} ms;"
                f" slowest 1%: sql {sample['tail_sql_ms']:.2f} ms"
                f" python {sample['tail_python_ms']:.2f} ms gc {sample['tail_gc_ms']:.2f} ms;"
                f" gen-2 collections {sample['gen2_collections']}"
                + (
                    f"; requests with catalog misses {sample['requests_with_catalog_misses']}"
                    f" (slowest 1%: {sample['tail_requests_with_catalog_misses']}),"
                    f" p99 of the others {sample['warm_only_p99_ms']:.2f} ms"
                    if count_misses
                    else ""
                ),
                file=sys.stderr,
                flush=True,
            )
    after_rounds = connection_memory()
    p99 = {variant: median([s["p99_ms"] for s in samples[variant]]) for variant in samples}
    p50 = {variant: median([s["p50_ms"] for s in samples[variant]]) for variant in samples}
    cpu = {
        key: {variant: median([s[key] for s in samples[variant]]) for variant in samples}
        for key in ("cpu_p50_ms", "cpu_p99_ms", "postgres_cpu_p50_ms", "postgres_cpu_p99_ms")
    }
    return {
        "organizations": len(hosts),
        "requests_per_round": requests,
        "rounds": samples,
        "p99_median_ms": p99,
        "p50_median_ms": p50,
        "p99_ratio": p99["N"] / p99["10"],
        "p50_ratio": p50["N"] / p50["10"],
        "cpu_median_ms": cpu,
        "cpu_ratios": {key: values["N"] / values["10"] for key, values in cpu.items()},
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


# The backend's not yet reported counts (PostgreSQL 15 keeps them across transactions until it
# reports them: forced after each read, at the backend's next idle moment, so that each read
# counts one request).
CATALOG_SCANS_IN_TRANSACTION = (
    "SELECT pg_stat_get_xact_numscans('pg_catalog.pg_class_oid_index'::regclass)"
    " + pg_stat_get_xact_numscans('pg_catalog.pg_class_relname_nsp_index'::regclass)"
    " + pg_stat_get_xact_numscans('pg_catalog.pg_attribute_relid_attnum_index'::regclass),"
    " pg_stat_force_next_flush()"
)


def _breakdown(trace: list[tuple]) -> dict:
    """Median request and the slowest 1 % (at or above the p99): SQL on the wire, the garbage
    collector, and the rest (Python: routing, middleware, Django, the test client)."""
    by_total = sorted(trace)
    tail = by_total[int(len(by_total) * 0.99) :]
    middle = by_total[len(by_total) // 2]

    def mean(rows: list[tuple], index: int) -> float:
        return sum(row[index] for row in rows) / len(rows) * 1000

    def python(row: tuple) -> float:
        return row[0] - row[1] - row[3]

    counted = {}
    if trace[0][6] >= 0:
        warm = [row[0] for row in trace if row[6] == 0]
        counted = {
            "requests_with_catalog_misses": sum(row[6] > 0 for row in trace),
            "tail_requests_with_catalog_misses": sum(row[6] > 0 for row in tail),
            "warm_only_p50_ms": percentile(warm, 0.5) * 1000 if warm else None,
            "warm_only_p99_ms": percentile(warm, 0.99) * 1000 if warm else None,
        }
    python_cpu = [row[7] for row in trace]
    postgres_cpu = [row[8] for row in trace]
    both_cpu = [row[7] + row[8] for row in trace]
    return {
        **counted,
        # CPU per request (this process's thread, and the PostgreSQL backend serving it).
        "cpu_p50_ms": percentile(both_cpu, 0.5) * 1000,
        "cpu_p99_ms": percentile(both_cpu, 0.99) * 1000,
        "python_cpu_p50_ms": percentile(python_cpu, 0.5) * 1000,
        "python_cpu_p99_ms": percentile(python_cpu, 0.99) * 1000,
        "postgres_cpu_p50_ms": percentile(postgres_cpu, 0.5) * 1000,
        "postgres_cpu_p99_ms": percentile(postgres_cpu, 0.99) * 1000,
        "median_sql_ms": middle[1] * 1000,
        "median_set_search_path_ms": middle[2] * 1000,
        "median_python_ms": python(middle) * 1000,
        "statements_per_request": sum(row[5] for row in trace) / len(trace),
        "tail_total_ms": mean(tail, 0),
        "tail_sql_ms": mean(tail, 1),
        "tail_set_search_path_ms": mean(tail, 2),
        "tail_gc_ms": mean(tail, 3),
        "tail_python_ms": sum(python(row) for row in tail) / len(tail) * 1000,
        "gc_ms_total": sum(row[3] for row in trace) * 1000,
        "gen2_collections": sum(row[4] for row in trace),
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
    parser.add_argument("--batch", type=int, default=5, help="schemas per transaction and job")
    parser.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="parallel builders (each holds ~150 locks per schema of its batch until commit)",
    )
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument(
        "--limit", type=int, default=0, help="measure among the first N organizations only"
    )
    parser.add_argument(
        "--count-misses",
        action="store_true",
        help="diagnostic: each request in a transaction, its catalog index scans counted",
    )
    parser.add_argument("--no-fresh-memory", action="store_true", help="skip the memory curve")
    parser.add_argument("--tag", default="", help="suffix of the results file name")
    parser.add_argument(
        "--gc-freeze", action="store_true", help="gc.freeze() after the cold pass (as a worker)"
    )
    parser.add_argument(
        "--conn-max-age",
        type=int,
        default=3600,
        help="the worker's CONN_MAX_AGE: long, so that one connection serves every round",
    )
    args = parser.parse_args()
    database = database_url("orgs")
    if args.action == "worker":
        result = worker(
            args.requests, args.rounds, args.limit or None, args.gc_freeze, args.count_misses
        )
        print("RESULT " + json.dumps(result), flush=True)
        return
    if args.action == "drop":
        drop_database(database)
        return
    RESULTS.mkdir(exist_ok=True)
    if args.action == "build":
        hour, minute = (int(part) for part in args.until.split(":"))
        until = dt.datetime.now(dt.UTC).replace(hour=hour, minute=minute, second=0)
        result = build(database, args.orgs, until, args.batch, args.jobs)
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
    command += ["--rounds", str(args.rounds), "--limit", str(args.limit)]
    command += ["--gc-freeze"] if args.gc_freeze else []
    command += ["--count-misses"] if args.count_misses else []
    process = subprocess.run(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
    process.check_returncode()
    line = next(line for line in process.stdout.splitlines() if line.startswith("RESULT "))
    result = json.loads(line.removeprefix("RESULT "))
    if not args.no_fresh_memory:
        result["fresh_connection_memory"] = memory_points(database, result["organizations"])
    result["facts"] = machine_facts(database)
    result["loadavg"] = Path("/proc/loadavg").read_text().split()[:3]
    result["command"] = "bench/many_orgs.py " + " ".join(sys.argv[1:])
    result["conn_max_age"] = args.conn_max_age
    name = f"many_orgs-{result['organizations']}{args.tag}.json"
    (RESULTS / name).write_text(json.dumps(result, indent=1))
    print(json.dumps({k: v for k, v in result.items() if k != "facts"}, indent=1))


if __name__ == "__main__":
    main()

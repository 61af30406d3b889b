"""Two shards: request routing beside one shard, and a move's write pause at 100,000 rows.

    .venv/bin/python bench/shards.py [--requests 2000] [--rounds 6] [--moves 5] [--rows 100000]
                                     [--hot-writes [--hot-batch N]]

Databases: `<prefix>_shards` (the shard `default`) and `<prefix>_shards_b` (the shard
`shard_b`, added with the product's `shard_add`), on the same server. Everything runs in one
process through the product's settings and middleware, with bench/routing_app's `/bench/query/`
(one small query in the organization's schema) served by Django's test client (WSGI, no
network).

Routing: requests alternate between organization A (on `default`) and B, each after Django's
`close_old_connections` as in a server (the test client skips it; without it only the two-shard
variant would pay the connections' health check, through the directory's own end-of-request
check). Variant `one shard`: B is
on `default` too, so every request switches the schema on one connection. Variant `two shards`: B
is on `b`, so every other request also switches the connection (tenants.context). B is moved
between rounds (untimed); the variants alternate which goes first; the figure is the median of
the rounds' mean time per request, and the ratio two/one.

Move pause: organization C holds `--rows` config keys (100,000 by default, plus its other tables)
and is moved back and forth between the shards with `scaling.moves.tenant_move`; the pause is the
time between pausing its writes and the switch (what its clients see as 503), reported per move
with the whole move's time. With `--hot-writes`, a client updates one row of that big table every
50 ms on the source while each move runs (the table changes after the dump: the move's row
triggers log the changed keys, the catch-up rounds and the pause apply those rows alone). With
`--hot-batch N`, N random rows of it in one statement every 50 ms.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    PYTHON,
    ROOT,
    create_database,
    database_url,
    django_env,
    ensure_database,
    machine_facts,
    median,
)

PASSWORD = "bench-password-correct-horse"


def hot_writer(
    url: str, schema: str, stop: threading.Event, batch: int, rows: int
) -> threading.Thread:
    """Every 50 ms on the source until `stop`, update one row of the big table (`bench.k1`), or
    with `batch` > 1 that many random rows in one statement (errors once the schema is paused,
    moved or gone end it)."""
    import random

    import psycopg

    def run() -> None:
        try:
            with psycopg.connect(url, autocommit=True) as conn:
                while not stop.wait(0.05):
                    keys = (
                        [f"bench.k{random.randint(1, rows)}" for _ in range(batch)]  # noqa: S311
                        if batch > 1
                        else ["bench.k1"]
                    )
                    conn.execute(
                        f'UPDATE "{schema}".agents_configkey SET version = version + 1 '  # noqa: S608
                        "WHERE key = ANY(%s)",
                        [keys],
                    )
        except psycopg.Error:
            return

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def worker(
    requests: int, rounds: int, moves: int, rows: int, hot: bool, hot_batch: int = 1
) -> dict:
    import django

    django.setup()
    from django.conf import settings
    from django.contrib.auth.hashers import get_hashers, get_hashers_by_algorithm
    from django.db import close_old_connections, connection
    from django.test import Client

    from core.actors import Actor
    from organizations import services
    from scaling.moves import tenant_move
    from scaling.shards import shard_add
    from tenants import context, routing, shards
    from tenants.models import Tenant

    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    get_hashers.cache_clear()
    get_hashers_by_algorithm.cache_clear()
    actor = Actor.system("bench")
    if "shard_b" not in shards.all_shards():
        shard_add(actor=actor, name="shard_b", url=os.environ["SHARD_B_URL"], region="us-east-1")

    def org(slug: str) -> Tenant:
        with context.public_context():
            found = Tenant.objects.filter(slug=slug).first()
        if found is None:
            found = services.provision_tenant(
                actor=actor,
                slug=slug,
                name=slug,
                owner_email=f"owner@{slug}.test",
                owner_password=PASSWORD,
            )
        return found

    def current(tenant: Tenant) -> Tenant:
        with context.public_context():
            return Tenant.objects.get(pk=tenant.pk)

    def place(tenant: Tenant, shard: str) -> None:
        if current(tenant).shard != shard:
            tenant_move(actor=actor, slug=tenant.slug, to=shard)
        routing.clear()

    a, b, c = org("bench-a"), org("bench-b"), org("bench-c")
    place(a, "default")
    with context.tenant_context(current(c)), connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM agents_configkey")
        if cursor.fetchone()[0] < rows:
            cursor.execute("DELETE FROM agents_configkey")
            cursor.execute(
                "INSERT INTO agents_configkey (key, value, version, updated_at, updated_by) "
                "SELECT 'bench.k' || n, jsonb_build_object('n', n, 'pad', repeat('x', 40)), 1, "
                "now(), 'bench' FROM generate_series(1, %s) n",
                [rows],
            )

    clients = [Client(HTTP_HOST=a.host), Client(HTTP_HOST=b.host)]
    for client in clients:
        assert client.get("/bench/query/").status_code == 200

    def timed_requests() -> tuple[float, float]:
        """Wall and this process's CPU seconds per request (CPU: what other load on a shared
        machine disturbs far less; the database's share runs in other processes).

        Each request starts with Django's `close_old_connections`, as a server's handler does
        (the test client leaves it out): it arms the connections' health check (CONN_HEALTH_CHECKS,
        one `SELECT 1` on a connection's first query of a request) in both variants alike."""
        started, cpu_started = time.perf_counter(), time.process_time()
        for index in range(requests):
            close_old_connections()
            response = clients[index % 2].get("/bench/query/")
            if response.status_code != 200:
                raise RuntimeError(response.content[:200])
        cpu = time.process_time() - cpu_started
        return (time.perf_counter() - started) / requests, cpu / requests

    routing_samples: dict[str, list[float]] = {"one shard": [], "two shards": []}
    cpu_samples: dict[str, list[float]] = {"one shard": [], "two shards": []}
    for round_number in range(rounds):
        order = ["one shard", "two shards"]
        if round_number % 2:
            order.reverse()
        for variant in order:
            place(b, "default" if variant == "one shard" else "shard_b")
            timed_requests()  # warm: caches, connections
            wall, cpu = timed_requests()
            routing_samples[variant].append(wall)
            cpu_samples[variant].append(cpu)
            print(
                f"round {round_number + 1} {variant}: "
                f"{wall * 1e6:.0f} us/request, {cpu * 1e6:.0f} us CPU/request",
                file=sys.stderr,
                flush=True,
            )

    move_samples = []
    for _ in range(moves):
        target = "shard_b" if current(c).shard == "default" else "default"
        stop = threading.Event()
        if hot:
            source_url = os.environ["SHARD_B_URL" if target == "default" else "DATABASE_URL"]
            writer = hot_writer(source_url, c.schema_name, stop, hot_batch, rows)
        try:
            report = tenant_move(actor=actor, slug=c.slug, to=target)
        finally:
            stop.set()
            if hot:
                writer.join(timeout=10)
        move_samples.append(
            {
                "to": target,
                "pause_seconds": report.pause_seconds,
                "seconds": report.seconds,
                "tables": report.tables,
                "rows": report.rows,
                "recopied": report.recopied,
                "rounds": report.rounds,
                "changes": report.changes,
                "paused_changes": report.paused_changes,
                "pause_steps": report.pause_steps,
            }
        )
        print(
            f"move to {target}: pause {report.pause_seconds * 1000:.0f} ms, "
            f"move {report.seconds:.2f} s, {report.rows} rows, {report.rounds} rounds, "
            f"{report.changes} changes ({report.paused_changes} paused), "
            f"re-copied {report.recopied}, pause steps {report.pause_steps}",
            file=sys.stderr,
            flush=True,
        )
    one = median(routing_samples["one shard"])
    two = median(routing_samples["two shards"])
    return {
        "requests_per_round": requests,
        "routing_seconds_per_request": routing_samples,
        "routing_median_us": {"one shard": one * 1e6, "two shards": two * 1e6},
        "routing_ratio": two / one,
        "routing_cpu_seconds_per_request": cpu_samples,
        "routing_cpu_median_us": {
            variant: median(values) * 1e6 for variant, values in cpu_samples.items()
        },
        "routing_cpu_ratio": median(cpu_samples["two shards"]) / median(cpu_samples["one shard"]),
        "routing_paired_ratio": median(
            [
                b / a
                for a, b in zip(
                    routing_samples["one shard"], routing_samples["two shards"], strict=True
                )
            ]
        ),
        "moves": move_samples,
        **(
            {
                "pause_median_ms": statistics.median(m["pause_seconds"] for m in move_samples)
                * 1000,
                "pause_max_ms": max(m["pause_seconds"] for m in move_samples) * 1000,
                "move_median_seconds": statistics.median(m["seconds"] for m in move_samples),
            }
            if move_samples
            else {}
        ),
        "hot_writes": hot,
        "hot_batch": hot_batch,
        "rows": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--moves", type=int, default=5)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--hot-writes", action="store_true")
    parser.add_argument(
        "--hot-batch", type=int, default=1, help="with --hot-writes: random rows per 50 ms"
    )
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        result = worker(
            args.requests, args.rounds, args.moves, args.rows, args.hot_writes, args.hot_batch
        )
        print("RESULT " + json.dumps(result), flush=True)
        return
    database, shard_b = database_url("shards"), database_url("shards_b")
    ensure_database(database)
    create_database(shard_b)
    env = django_env(
        database, SHARD_B_URL=shard_b, DJANGO_SETTINGS_MODULE="routing_app.settings_routed"
    )
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "bench"), env["PYTHONPATH"]])
    command = [PYTHON, __file__, "--worker", "--requests", str(args.requests)]
    command += ["--rounds", str(args.rounds), "--moves", str(args.moves), "--rows", str(args.rows)]
    command += ["--hot-writes"] if args.hot_writes else []
    command += ["--hot-batch", str(args.hot_batch)]
    process = subprocess.run(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
    process.check_returncode()
    line = next(line for line in process.stdout.splitlines() if line.startswith("RESULT "))
    result = json.loads(line.removeprefix("RESULT "))
    result["facts"] = machine_facts(database)
    result["command"] = "bench/shards.py " + " ".join(sys.argv[1:])
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    default_run = args.rows == 100_000 and not args.hot_writes
    hot = "-hot" * args.hot_writes + (f"{args.hot_batch}" if args.hot_batch > 1 else "")
    name = "shards.json" if default_run else f"shards-{args.rows}{hot}.json"
    name = "shards-routing.json" if not args.moves else name
    (out / name).write_text(json.dumps(result, indent=1))
    pause = (
        f"; move pause median {result['pause_median_ms']:.0f} ms (max {result['pause_max_ms']:.0f}"
        f" ms), move median {result['move_median_seconds']:.1f} s"
        if args.moves
        else ""
    )
    print(
        f"routing: one shard {result['routing_median_us']['one shard']:.0f} us/request, "
        f"two shards {result['routing_median_us']['two shards']:.0f} us/request, "
        f"ratio {result['routing_ratio']:.3f} (paired {result['routing_paired_ratio']:.3f}, CPU "
        f"{result['routing_cpu_ratio']:.3f}){pause}"
    )


if __name__ == "__main__":
    main()

"""Audit benchmark: recording with the hash chain, filtered lists and exports at a million events.

Part 1, writes: events recorded per second through `audit.services.record` (advisory lock on the
  chain's tail, read the tail, hash, insert; one transaction per event) with 1 and with 8 writer
  processes, beside plain INSERTs of the same rows into a copy of the table (same columns and
  indexes; no chain, no lock, no trigger), in alternating rounds of the same run.
Part 2, lists: `audit.selectors.event_list` (one page of 50, newest first) on an organization
  with 1,000,000 chained events, for each filter the portal and the API offer: median and p95
  latency, and the plan's access path.
Part 3, exports: each format streamed through the export view's response (the code the portal
  and the API run) for all 1,000,000 events: events/s, MB/s, and the process's peak RSS, beside
  the same export of 10,000 events (constant memory means the same peak).

    .venv/bin/python bench/audit_bench.py [--events 1000000] [--writes 2000] [--rounds 3]

The database is bench/_common's `agentplane_bench_audit` (BENCH_POSTGRES_URL to move it); the
million events are loaded once (COPY of a valid chain) and reused by later runs.
"""

from __future__ import annotations

import argparse
import json
import os
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
    ensure_database,
    machine_facts,
    median,
    percentile,
)

DATABASE = os.environ.get("BENCH_AUDIT_DATABASE_URL", database_url("audit"))
RESULTS = ROOT / "bench" / "results" / "audit.json"
WRITES_SLUG = "audit-bench-writes"
LOG_SLUG = "audit-bench-log"
PASSWORD = "bench-password-correct-horse"
SCRIPT = str(Path(__file__).resolve())


# --- Shared by the parent and the worker processes ---------------------------------------------


def setup_django() -> None:
    import django

    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    django.setup()


def organization(slug: str):
    from core.actors import Actor
    from organizations import services
    from tenants import context
    from tenants.models import Tenant

    with context.public_context():
        tenant = Tenant.objects.select_related("plan").filter(slug=slug).first()
        if tenant is None:
            tenant = services.provision_tenant(
                actor=Actor.system("bench"),
                slug=slug,
                name=f"Bench {slug}",
                owner_email=f"owner@{slug}.test",
                owner_password=PASSWORD,
                plan_slug="enterprise",
            )
    return tenant


PLAIN_TABLE = "bench_plain_event"
PLAIN_COLUMNS = (
    "tenant_id, sequence, occurred_at, actor_kind, actor_id, actor_label, action, "
    "resource_type, resource_id, result, ip, user_agent, details, previous_hash, hash"
)


def ensure_plain_table() -> None:
    """A copy of the events table (columns, indexes, identity) without the chain or triggers."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            f"CREATE TABLE IF NOT EXISTS {PLAIN_TABLE} (LIKE audit_auditevent INCLUDING ALL)"
        )
        cursor.execute(f"CREATE SEQUENCE IF NOT EXISTS {PLAIN_TABLE}_seq")


# --- Worker: one writer process ------------------------------------------------------------------


def worker(mode: str, count: int, number: int) -> None:
    """Record `count` events (mode `chain`) or insert `count` plain rows, once told to go."""
    setup_django()
    from django.db import connection, transaction
    from django.utils import timezone

    from audit import services
    from core.actors import Actor
    from tenants import context

    tenant = organization(WRITES_SLUG)
    actor = Actor(kind="user", id=str(number), label=f"writer{number}@bench.test", ip="10.0.0.1")
    details = {"writer": number, "name": "an agent", "changes": {"cpu": "500m", "memory": "1Gi"}}
    with context.tenant_context(tenant):
        connection.ensure_connection()
        print("ready", flush=True)
        sys.stdin.readline()
        started = time.time()
        if mode == "chain":
            for index in range(count):
                with transaction.atomic():
                    services.record(
                        actor=actor,
                        action="agent.updated",
                        resource_type="agent",
                        resource_id=index,
                        details=details,
                    )
        else:
            payload = json.dumps(details)
            sql = (
                f"INSERT INTO {PLAIN_TABLE} ({PLAIN_COLUMNS}) VALUES "
                f"(%s, nextval('{PLAIN_TABLE}_seq'), %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, "
                "%s, %s, %s)"
            )
            for index in range(count):
                with transaction.atomic(), connection.cursor() as cursor:
                    cursor.execute(
                        sql,
                        [
                            str(tenant.public_id),
                            timezone.now(),
                            actor.kind,
                            actor.id,
                            actor.label,
                            "agent.updated",
                            "agent",
                            str(index),
                            "success",
                            actor.ip,
                            "",
                            payload,
                            "0" * 64,
                            "0" * 64,
                        ],
                    )
        finished = time.time()
    print(json.dumps({"started": started, "finished": finished}), flush=True)


def run_writers(mode: str, writers: int, total: int) -> float:
    """Events per second for `writers` processes sharing `total` events (started together)."""
    env = django_env(DATABASE)
    each = total // writers
    processes = [
        subprocess.Popen(
            [PYTHON, SCRIPT, "worker", mode, str(each), str(number)],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for number in range(writers)
    ]
    for process in processes:
        assert process.stdout.readline().strip() == "ready"
    for process in processes:
        process.stdin.write("go\n")
        process.stdin.flush()
    spans = []
    for process in processes:
        spans.append(json.loads(process.stdout.readline()))
        process.wait()
        if process.returncode != 0:
            raise RuntimeError(f"writer failed ({mode})")
    elapsed = max(span["finished"] for span in spans) - min(span["started"] for span in spans)
    return each * writers / elapsed


# --- Part 2: a million chained events ------------------------------------------------------------

ACTIONS = [  # (action, weight): a realistic mix, with rare ones for selective filters
    ("agent.updated", 300),
    ("instance.requested", 200),
    ("instance.stopped", 180),
    ("auth.login", 120),
    ("config.updated", 80),
    ("task.published", 60),
    ("api_key.used", 40),
    ("member.created", 10),
    ("invitation.created", 9),
    ("member.role_changed", 1),
]


def load_log(total: int) -> None:
    """Fill the log organization with `total` valid, chained events (COPY), if not done yet."""
    import random
    from datetime import timedelta

    from django.db import connection
    from django.utils import timezone

    from audit.chain import GENESIS_HASH, compute_hash
    from audit.models import AuditEvent
    from audit.verify import verify_chain
    from tenants import context

    tenant = organization(LOG_SLUG)
    with context.tenant_context(tenant):
        have = AuditEvent.objects.count()
        if have >= total:
            print(f"log: {have} events already loaded", flush=True)
            return
        print(f"log: loading {total - have} events ...", flush=True)
        rng = random.Random(20261127)  # noqa: S311 (test data)
        actions = [action for action, weight in ACTIONS for _ in range(weight)]
        last = AuditEvent.objects.order_by("-sequence").first()
        sequence, previous = (last.sequence, last.hash) if last else (0, GENESIS_HASH)
        start = timezone.now() - timedelta(days=365)
        step = timedelta(days=365) / total
        tenant_id = str(tenant.public_id)
        started = time.perf_counter()
        with connection.cursor() as cursor:
            with cursor.cursor.copy(f"COPY audit_auditevent ({PLAIN_COLUMNS}) FROM STDIN") as copy:
                for number in range(have, total):
                    sequence += 1
                    roll = rng.random()
                    if roll < 0.05:
                        kind, actor_id, label = "system", "", "scheduler"
                    elif roll < 0.08:
                        key = rng.randrange(10)
                        kind, actor_id, label = "api_key", str(key), f"ci key {key}"
                    else:
                        user = rng.randrange(50)
                        kind, actor_id, label = "user", str(user), f"user{user}@bench.test"
                    roll = rng.random()
                    result = "denied" if roll < 0.015 else "failed" if roll < 0.02 else "success"
                    event = AuditEvent(
                        tenant_id=tenant_id,
                        sequence=sequence,
                        occurred_at=start + step * number,
                        actor_kind=kind,
                        actor_id=actor_id,
                        actor_label=label,
                        action=rng.choice(actions),
                        resource_type="agent",
                        resource_id=str(rng.randrange(2000)),
                        result=result,
                        ip=f"10.0.{rng.randrange(256)}.{rng.randrange(256)}",
                        user_agent="AgentPlaneSDK/1.4 (python)",
                        details={"n": number, "changes": {"cpu": "500m"}, "note": "bench"},
                        previous_hash=previous,
                    )
                    event.hash = compute_hash(event)
                    previous = event.hash
                    copy.write_row(
                        [
                            event.tenant_id,
                            event.sequence,
                            event.occurred_at,
                            event.actor_kind,
                            event.actor_id,
                            event.actor_label,
                            event.action,
                            event.resource_type,
                            event.resource_id,
                            event.result,
                            event.ip,
                            event.user_agent,
                            json.dumps(event.details),
                            event.previous_hash,
                            event.hash,
                        ]
                    )
            cursor.execute("ANALYZE audit_auditevent")
        print(f"log: loaded in {time.perf_counter() - started:.0f} s", flush=True)
        started = time.perf_counter()
        report = verify_chain(tenant_id=tenant_id)
        print(
            f"log: verify {'intact' if report.is_intact else 'BROKEN'}, {report.checked} events "
            f"in {time.perf_counter() - started:.1f} s",
            flush=True,
        )


def measure_lists(repeats: int) -> list[dict]:
    import datetime as dt

    from django.db import connection

    from audit import selectors
    from audit.models import AuditEvent
    from audit.selectors import EventFilters
    from core.actors import Actor
    from tenants import context

    tenant = organization(LOG_SLUG)
    actor = Actor.system("bench")
    with context.tenant_context(tenant):
        head = AuditEvent.objects.order_by("-sequence").values_list("sequence", flat=True)[0]
        middle = AuditEvent.objects.get(sequence=head // 2).occurred_at
        day = EventFilters(start=middle, end=middle + dt.timedelta(days=1))
        cases = [
            ("newest page, no filter", EventFilters(), None),
            ("action, common (30%)", EventFilters(action="agent.updated"), None),
            ("action, rare (0.1%)", EventFilters(action="member.role_changed"), None),
            ("actor (1 user of 50)", EventFilters(actor="user7@bench.test"), None),
            ("resource (type + id)", EventFilters(resource_type="agent", resource_id="42"), None),
            ("result = denied (1.5%)", EventFilters(result="denied"), None),
            ("time range: one day", day, None),
            (
                "action + one week",
                EventFilters(action="auth.login", start=middle, end=middle + dt.timedelta(days=7)),
                None,
            ),
            (
                "deep page: action, cursor at the middle",
                EventFilters(action="agent.updated"),
                head // 2,
            ),
            (
                "deep page: rare action, cursor at the middle",
                EventFilters(action="member.role_changed"),
                head // 2,
            ),
        ]
        results = []
        for name, filters, cursor in cases:
            for _ in range(3):  # warm the cache: the figures are for a warm server
                selectors.event_list(actor=actor, filters=filters, cursor=cursor)
            timings = []
            for _ in range(repeats):
                started = time.perf_counter()
                page = selectors.event_list(actor=actor, filters=filters, cursor=cursor)
                timings.append((time.perf_counter() - started) * 1000)
            queryset = filters.apply(AuditEvent.objects.all())
            if cursor is not None:
                queryset = queryset.filter(sequence__lt=cursor)
            plan = queryset.order_by("-sequence")[:51].explain()
            access = next(
                line.strip().removeprefix("->").strip()
                for line in plan.splitlines()
                if "Scan" in line
            )
            results.append(
                {
                    "case": name,
                    "rows": len(page.events),
                    "median_ms": round(median(timings), 2),
                    "p95_ms": round(percentile(timings, 0.95), 2),
                    "plan": access.split("  (")[0],
                }
            )
            print(f"list: {results[-1]}", flush=True)
        connection.close()
    return results


# --- Part 3: exports ------------------------------------------------------------------------------


def export_worker(fmt: str, limit: int) -> None:
    """Stream one export through the view's response; print time, bytes and peak RSS."""
    import resource

    setup_django()
    from django.test import RequestFactory

    from audit.exports import audit_log_export
    from audit.models import AuditEvent
    from audit.selectors import EventFilters
    from audit.views import export_response
    from core.actors import Actor
    from tenants import context

    tenant = organization(LOG_SLUG)
    with context.tenant_context(tenant):
        filters = EventFilters()
        if limit:
            end = AuditEvent.objects.get(sequence=limit + 1).occurred_at
            filters = EventFilters(end=end)
        baseline_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        started = time.perf_counter()
        recorded = audit_log_export(actor=Actor.system("bench"), format=fmt, filters=filters)
        response = export_response(RequestFactory().get("/audit/export/"), recorded)
        size = 0
        lines = 0
        for chunk in response:
            size += len(chunk)
            lines += chunk.count(b"\n")
        elapsed = time.perf_counter() - started
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        json.dumps(
            {
                "seconds": elapsed,
                "bytes": size,
                "lines": lines,
                "baseline_mb": baseline_kb / 1024,
                "peak_mb": peak_kb / 1024,
            }
        )
    )


def run_export(fmt: str, limit: int) -> dict:
    output = subprocess.run(
        [PYTHON, SCRIPT, "export", fmt, str(limit)],
        cwd=ROOT,
        env=django_env(DATABASE),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return json.loads(output.strip().splitlines()[-1])


# --- Orchestration --------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--writes", type=int, default=2000, help="events per write round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--writers", type=int, default=8)
    parser.add_argument("--list-repeats", type=int, default=50)
    parser.add_argument("--skip", default="", help="comma-separated: writes,lists,exports")
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))

    ensure_database(DATABASE)
    subprocess.run(
        [PYTHON, "manage.py", "migrate_schemas", "--tenant", "-v0"],
        cwd=ROOT,
        env=django_env(DATABASE),
        check=True,
    )
    os.environ.update(django_env(DATABASE))
    setup_django()
    from tenants import context

    facts = machine_facts(DATABASE)
    result: dict = {"facts": facts, "args": vars(args)}
    print(json.dumps(facts), flush=True)

    if "writes" not in skip:
        with context.tenant_context(organization(WRITES_SLUG)):
            ensure_plain_table()
        from django.db import connection

        connection.close()
        writes: dict[str, list[float]] = {}
        for _ in range(args.rounds):
            for mode in ("chain", "plain"):
                for writers in (1, args.writers):
                    rate = run_writers(mode, writers, args.writes)
                    writes.setdefault(f"{mode}-{writers}", []).append(rate)
                    print(f"writes: {mode} x{writers}: {rate:.0f}/s", flush=True)
        result["writes"] = {key: {"rounds": v, "median": median(v)} for key, v in writes.items()}

    if "lists" not in skip or "exports" not in skip:
        load_log(args.events)
    if "lists" not in skip:
        result["lists"] = measure_lists(args.list_repeats)

    if "exports" not in skip:
        exports = {}
        for fmt in ("json", "csv", "cef"):
            small = run_export(fmt, 10_000)
            full = run_export(fmt, 0)
            exports[fmt] = {"10k": small, "full": full}
            print(f"export {fmt}: {json.dumps(exports[fmt])}", flush=True)
        result["exports"] = exports

    RESULTS.parent.mkdir(exist_ok=True)
    if RESULTS.exists() and skip:
        previous = json.loads(RESULTS.read_text())
        previous.update(result)
        result = previous
    RESULTS.write_text(json.dumps(result, indent=2))
    print(f"results: {RESULTS}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "worker":
        worker(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    elif len(sys.argv) > 1 and sys.argv[1] == "export":
        export_worker(sys.argv[2], int(sys.argv[3]))
    else:
        main()

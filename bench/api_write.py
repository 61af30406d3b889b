"""API write path: instance start and stop through the service, against raw psycopg sending the
same statements, for one client and for 8 concurrent clients of one organization.

The service variant runs `agents.services.instance_request` then `instance_stop` (agent,
instance insert, audit event, the pool's conditional UPDATE last, commit, event published after
commit). The floor sends the statements the service sends (traced at psycopg: BEGIN; agent;
INSERT instance; INSERT audit event, unsealed; UPDATE pool ... WHERE every limit holds; COMMIT,
and the stop's BEGIN; instance FOR UPDATE; UPDATE instance; INSERT audit event; UPDATE pool;
COMMIT) with raw psycopg and publishes nothing;
`floor` does not seal (the service's sealer thread does that work after commit; the floor's
events are sealed after its round, untimed, by `manage.py seal_audit`: a conservative floor).
`floor-sealed` is the floor plus what the service's sealing sends: one raw psycopg process
sealing the floor's events every 50 ms with the leader's two round trips (FLOOR_SEALER), so that
every statement the service sends is in it.
`service` runs with AUDIT_SEALER=thread (sealed after commit, by one leader process per schema
at a time, every AUDIT_SEAL_INTERVAL_SECONDS), `service-immediate` with AUDIT_SEALER=immediate
(the chain's lock held until commit), both named explicitly.
After each service round the bench waits until everything is sealed and reports the sealing lag
(sealed_at - occurred_at, an upper bound of commit -> sealed) of that round's events. Each client is
its own process with its own connection; clients are started, then released together. The
variants alternate round by round (one client, then 8), in a rotating order. Each cell starts
from vacuumed tables (`vacuum`, untimed), as autovacuum keeps them on a production server.

    .venv/bin/python bench/api_write.py [--rounds 5] [--duration 4] [--clients 8]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from datetime import UTC

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

SLUG = "writes-bench"
RESULTS = ROOT / "bench" / "results"

SETUP = f"""
import json
import django
django.setup()
from agents import services
from agents.models import Agent
from core.actors import Actor
from organizations import services as tenant_services
from tenants import context
from tenants.models import Tenant

system = Actor.system("bench")
with context.public_context():
    tenant = Tenant.objects.filter(slug={SLUG!r}).first()
    if tenant is None:
        tenant = tenant_services.provision_tenant(
            actor=system, slug={SLUG!r}, name="Writes bench", owner_email="owner@writes.test",
            owner_password="bench-password-correct-horse", plan_slug="enterprise",
        )
services.organization_limits_set(actor=system, tenant=tenant, overrides={{
    "max_agents": 1000, "max_instances": 100_000_000,
    "max_cpu_millicores": 2_000_000_000, "max_memory_mb": 2_000_000_000,
}})
with context.tenant_context(tenant):
    agent = Agent.objects.filter(name="bench-writer").first() or services.agent_create(
        actor=system, name="bench-writer", type="worker", cpu="100m", memory="64MB")
print("SETUP " + json.dumps({{"schema": tenant.schema_name, "tenant_id": str(tenant.public_id),
                              "agent_id": str(agent.pk)}}))
"""

# A client through the product's services: start then stop, for `duration` seconds.
SERVICE = f"""
import json, sys, time
import django
django.setup()
from agents import services
from core.actors import Actor
from tenants import context
from tenants.models import Tenant

duration, agent_id = float(sys.argv[1]), sys.argv[2]
with context.public_context():
    tenant = Tenant.objects.select_related("plan").get(slug={SLUG!r})
actor = Actor.system("bench client")
with context.tenant_context(tenant):
    services.instance_stop(actor=actor, agent_id=agent_id, instance_id=services.instance_request(
        actor=actor, agent_id=agent_id).pk)  # warm: connection, caches, publisher thread
    # As a gunicorn worker after loading the application (gunicorn.conf.py, post_worker_init).
    import importlib.util
    spec = importlib.util.spec_from_file_location("gunicorn_conf", "gunicorn.conf.py")
    gunicorn_conf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gunicorn_conf)
    gunicorn_conf.freeze_loaded_objects()
    print("ready", flush=True)
    sys.stdin.readline()
    starts, stops = [], []
    cpu = time.process_time()  # every thread of the process: the sealer's too
    deadline = time.perf_counter() + duration
    while time.perf_counter() < deadline:
        t0 = time.perf_counter()
        instance = services.instance_request(actor=actor, agent_id=agent_id)
        t1 = time.perf_counter()
        services.instance_stop(actor=actor, agent_id=agent_id, instance_id=instance.pk)
        starts.append(t1 - t0)
        stops.append(time.perf_counter() - t1)
    cpu = time.process_time() - cpu
print(json.dumps({{"starts": starts, "stops": stops, "cpu": cpu}}))
"""

# The floor: the same statements with raw psycopg (no Django, no event publishing).
FLOOR = """
import hashlib, json, sys, time, uuid
from datetime import datetime, timezone
import psycopg

url, duration, schema, tenant_id, agent_id = (sys.argv[1], float(sys.argv[2]), sys.argv[3],
                                              sys.argv[4], sys.argv[5])
conn = psycopg.connect(url)
conn.execute(f'SET search_path = "{schema}", public')
conn.commit()

def audit(cur, action, resource_id, details):
    # As `record` now does: the event inserted unsealed, no lock (the sealing, done after commit
    # by the service's sealer, costs the floor nothing: a conservative floor).
    cur.execute(
        "INSERT INTO audit_auditevent (tenant_id, occurred_at, actor_kind, actor_id,"
        " actor_label, action, resource_type, resource_id, result, ip, user_agent, details,"
        " previous_hash, hash) VALUES (%s, %s, 'system', '', 'bench floor', %s, 'instance',"
        " %s, 'success', NULL, '', %s, '', '')",
        [tenant_id, datetime.now(timezone.utc), action, resource_id, json.dumps(details)])

POOL_CHANGE = (
    "UPDATE agents_resourcepool SET agents = agents + 0, instances = instances + %s,"
    " cpu_millicores = cpu_millicores + %s, memory_mb = memory_mb + %s, updated_at = %s"
    " WHERE id = 1"
)
POOL_ROOM = (
    " AND agents <= %s AND instances + 1 <= %s AND cpu_millicores + %s <= %s"
    " AND memory_mb + %s <= %s"
)
BIG = 2_000_000_000

def start():
    with conn.cursor() as cur:
        cur.execute("SELECT id, name, cpu_millicores, memory_mb FROM agents_agent WHERE id = %s",
                    [agent_id])
        agent = cur.fetchone()
        instance = str(uuid.uuid4())
        now = datetime.now(timezone.utc)
        cur.execute(
            "INSERT INTO agents_agentinstance (id, agent_id, status, namespace, cpu_millicores,"
            " memory_mb, requested_by, requested_at) VALUES (%s, %s, 'pending', %s, %s, %s,"
            " 'bench floor', %s)",
            [instance, agent_id, "tenant." + tenant_id + ".agents." + agent_id, agent[2],
             agent[3], now])
        audit(cur, "instance.requested", instance, {"agent": agent[1], "status": "pending"})
        # Last: the conditional allocation (the pool row locked for the commit only).
        cur.execute(POOL_CHANGE + POOL_ROOM, [1, agent[2], agent[3], now, BIG, BIG, agent[2],
                                              BIG, agent[3], BIG])
        assert cur.rowcount == 1
    conn.commit()
    return instance, agent

def stop(instance, agent):
    with conn.cursor() as cur:
        cur.execute("SELECT id, status FROM agents_agentinstance WHERE agent_id = %s AND id = %s"
                    " FOR UPDATE", [agent_id, instance])
        now = datetime.now(timezone.utc)
        cur.execute("UPDATE agents_agentinstance SET status = 'stopped', stopped_at = %s,"
                    " metered_until = NULL WHERE id = %s", [now, instance])
        audit(cur, "instance.stopped", instance, {"status": "stopped", "reason": "requested"})
        cur.execute(POOL_CHANGE, [-1, -agent[2], -agent[3], now])
    conn.commit()

stop(*start())
print("ready", flush=True)
sys.stdin.readline()
starts, stops = [], []
cpu = time.process_time()
deadline = time.perf_counter() + duration
while time.perf_counter() < deadline:
    t0 = time.perf_counter()
    made = start()
    t1 = time.perf_counter()
    stop(*made)
    starts.append(t1 - t0)
    stops.append(time.perf_counter() - t1)
cpu = time.process_time() - cpu
print(json.dumps({"starts": starts, "stops": stops, "cpu": cpu}))
"""


# The floor's sealer for `floor-sealed`: one raw psycopg process sending the service leader's
# pass (audit.sealing._pipelined_pass: BEGIN, the chain's lock, the head and the batch in one
# round trip; the UPDATE of the batch and COMMIT in a second) every 50 ms, as the service's
# sealer thread does, and hashing as audit.chain.compute_hash does (plain hashlib, no models).
# It passes until its stdin closes, then once more.
FLOOR_SEALER = """
import hashlib, json, select, sys
from datetime import datetime, timezone
import psycopg

url, schema = sys.argv[1], sys.argv[2]
conn = psycopg.connect(url, autocommit=True)
conn.execute(f'SET search_path = "{schema}", public')
conn.execute("SET TIME ZONE 'UTC'")
COLUMNS = ("id", "tenant_id", "occurred_at", "actor_kind", "actor_id", "actor_label", "action",
           "resource_type", "resource_id", "result", "ip", "user_agent", "details")
BATCH = ("SELECT " + ", ".join(COLUMNS) + " FROM audit_auditevent WHERE sequence IS NULL"
         " ORDER BY id LIMIT 500")
HEAD = ("(SELECT 0, sequence, hash, occurred_at FROM audit_auditevent WHERE sequence IS NOT NULL"
        " ORDER BY sequence DESC LIMIT 1) UNION ALL (SELECT 1, sequence, hash, NULL FROM"
        " audit_auditcheckpoint ORDER BY sequence DESC LIMIT 1)")
UPDATE = ("WITH sealed AS (UPDATE audit_auditevent AS e SET sequence = v.sequence,"
          " previous_hash = v.previous_hash, hash = v.hash, sealed_at = %s"
          " FROM unnest(%s::bigint[], %s::bigint[], %s::varchar[], %s::varchar[])"
          " AS v(id, sequence, previous_hash, hash) WHERE e.id = v.id AND e.sequence IS NULL"
          " RETURNING 1) SELECT 1 / (count(*) = %s)::int FROM sealed")

def seal_pass():
    cursors = begin, lock, head, batch = [conn.cursor() for _ in range(4)]
    with conn.pipeline():
        begin.execute("BEGIN")
        lock.execute("SELECT pg_advisory_xact_lock(%s, hashtext(current_schema()))", [0x41554454])
        head.execute(HEAD)
        batch.execute(BATCH)
        heads = sorted(head.fetchall())
        rows = batch.fetchall()
        sequence, previous = heads[0][1:3] if heads else (0, "0" * 64)
        now = datetime.now(timezone.utc)
        ids, sequences, previouses, hashes = [], [], [], []
        for row in rows:
            fields = dict(zip(COLUMNS[1:], row[1:]))
            sequence += 1
            fields.update(sequence=sequence, previous_hash=previous,
                          occurred_at=fields["occurred_at"].isoformat())
            previous = hashlib.sha256(json.dumps(fields, sort_keys=True, separators=(",", ":"),
                                                 default=str).encode()).hexdigest()
            ids.append(row[0]); sequences.append(sequence)
            previouses.append(fields["previous_hash"]); hashes.append(previous)
        if rows:
            lock.execute(UPDATE, [now, ids, sequences, previouses, hashes, len(rows)])
        begin.execute("COMMIT")
    for cursor in cursors:
        cursor.close()

while select.select([sys.stdin], [], [], 0.05)[0] == [] or sys.stdin.readline():
    seal_pass()
seal_pass()
"""


def sealing_lag(database: str, schema: str, since) -> dict:
    """Wait until the round's events are sealed; their lag (ms) from insert to sealing."""
    import time

    import psycopg

    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute(f'SET search_path = "{schema}", public')
        deadline = time.monotonic() + 60
        while conn.execute(
            "SELECT count(*) FROM audit_auditevent WHERE sequence IS NULL"
            " AND actor_label <> 'bench floor'"
        ).fetchone()[0]:
            if time.monotonic() > deadline:
                raise RuntimeError("events still unsealed 60 s after the round")
            time.sleep(0.05)
        rows = conn.execute(
            "SELECT extract(epoch FROM sealed_at - occurred_at) * 1000, sealed_at"
            " FROM audit_auditevent WHERE occurred_at >= %s AND actor_label <> 'bench floor'",
            [since],
        ).fetchall()
    lags = [float(row[0]) for row in rows]
    return {
        "lag_ms_median": median(lags),
        "lag_ms_p99": percentile(lags, 0.99),
        "lag_ms_max": max(lags),
        # A pass dates its batch with one sealed_at: events per pass that sealed something.
        "events_per_pass": len(rows) / len({row[1] for row in rows}),
    }


# The tables every pair changes. This machine's PostgreSQL runs without autovacuum; a production
# one has it on (its default). Without it the dead row versions of a run pile up: the partial
# index of unsealed events, which every sealing pass reads, held 2,147 pages of dead entries
# after 1.3 million sealed events (4 ms a pass, growing), a cost the floor's timed rounds do
# not pay. So each cell starts from vacuumed tables, untimed, for every variant.
VACUUMED = ("audit_auditevent", "agents_agentinstance", "agents_resourcepool")


def vacuum(database: str, schema: str) -> None:
    import psycopg

    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("VACUUM " + ", ".join(f'"{schema}".{table}' for table in VACUUMED))


def run_clients(variant: str, clients: int, duration: float, database: str, facts: dict) -> dict:
    from datetime import datetime

    vacuum(database, facts["schema"])
    since = datetime.now(UTC)
    # `service` seals after commit (the thread sealer), `service-immediate` in the writer's
    # transaction: both named, whatever the default is.
    sealer = "immediate" if variant == "service-immediate" else "thread"
    env = django_env(database, AUDIT_SEALER=sealer)
    if variant.startswith("service"):
        command = [PYTHON, "-c", SERVICE, str(duration), facts["agent_id"]]
    else:
        command = [
            PYTHON,
            "-c",
            FLOOR,
            database,
            str(duration),
            facts["schema"],
            facts["tenant_id"],
            facts["agent_id"],
        ]
    processes = [
        subprocess.Popen(
            command, cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        for _ in range(clients)
    ]
    sealer = None
    if variant == "floor-sealed":
        sealer = subprocess.Popen(
            [PYTHON, "-c", FLOOR_SEALER, database, facts["schema"]], stdin=subprocess.PIPE
        )
    for process in processes:
        line = process.stdout.readline()
        if line.strip() != "ready":
            raise RuntimeError(f"{variant} client did not start: {line!r}")
    for process in processes:  # released together
        process.stdin.write("go\n")
        process.stdin.flush()
    starts: list[float] = []
    pairs = 0
    cpu = 0.0
    for process in processes:
        out, _ = process.communicate(timeout=duration + 120)
        result = json.loads(out.strip().splitlines()[-1])
        starts += result["starts"]
        pairs += len(result["starts"])
        cpu += result["cpu"]
    if sealer is not None:
        sealer.communicate(timeout=120)  # its stdin closed: one more pass, then it ends
        if sealer.returncode:
            raise RuntimeError(f"the floor's sealer failed ({sealer.returncode})")
    result = {
        "pairs_per_s": pairs / duration,
        "start_ms_median": median(starts) * 1e3,
        "start_ms_p95": percentile(starts, 0.95) * 1e3,
        # The clients' own CPU (all their threads) per pair: what a loaded machine changes least.
        "client_cpu_ms_per_pair": cpu / max(pairs, 1) * 1e3,
    }
    if variant == "service":
        result.update(sealing_lag(database, facts["schema"], since))
    elif variant.startswith("floor"):
        # Seal the floor's events now, untimed: they must not sit as a backlog in front of the
        # next service round's events (that would measure the backlog, not the sealing lag).
        subprocess.run(
            [PYTHON, "manage.py", "seal_audit", "--tenant", SLUG],
            cwd=ROOT,
            env=env,
            check=True,
            capture_output=True,
        )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=float, default=4.0)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()
    database = database_url("writes")
    ensure_database(database)
    out = subprocess.run(
        [PYTHON, "-c", SETUP],
        cwd=ROOT,
        env=django_env(database),
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    facts = json.loads(next(x for x in out.splitlines() if x.startswith("SETUP "))[6:])
    cells = [
        (variant, clients)
        for clients in (1, args.clients)
        for variant in ("service", "service-immediate", "floor", "floor-sealed")
    ]
    samples: dict[str, list[dict]] = {f"{v}/{c}": [] for v, c in cells}
    for number in range(args.rounds):
        shift = number % len(cells)
        for variant, clients in cells[shift:] + cells[:shift]:
            samples[f"{variant}/{clients}"].append(
                run_clients(variant, clients, args.duration, database, facts)
            )
        print(f"  round {number + 1}/{args.rounds}", file=sys.stderr, flush=True)
    summary = {}
    for name, rows in samples.items():
        summary[name] = {key: median([row[key] for row in rows]) for key in rows[0]}
    for clients in (1, args.clients):
        for variant, base, label in (
            ("service", "floor", "ratio"),
            ("service-immediate", "floor", "ratio-immediate"),
            ("service", "floor-sealed", "ratio-to-sealed-floor"),
        ):
            service, floor = samples[f"{variant}/{clients}"], samples[f"{base}/{clients}"]
            summary[f"{label}/{clients}"] = {
                "throughput_service_over_floor": median(
                    [
                        s["pairs_per_s"] / f["pairs_per_s"]
                        for s, f in zip(service, floor, strict=True)
                    ]
                ),
                "start_latency_service_over_floor": median(
                    [
                        s["start_ms_median"] / f["start_ms_median"]
                        for s, f in zip(service, floor, strict=True)
                    ]
                ),
            }
    result = {
        "args": vars(args),
        "facts": machine_facts(database),
        "samples": samples,
        "summary": summary,
    }
    with open("/proc/loadavg") as load:
        result["facts"]["loadavg_after"] = load.read().strip()
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "api_write.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()

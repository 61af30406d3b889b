"""Agents benchmark: instance requests under concurrency, and the resolved-config read.

Part 1: `agents.services.instance_request` from 8 concurrent clients (processes, each with its own
PostgreSQL connection), against a pool big enough never to refuse: requests per second, beside
the same service with the pool row's `SELECT ... FOR UPDATE` replaced by a plain read (the
baseline). Then a correctness probe: 8 clients against room for 3, in each mode.

Part 2: `agents.selectors.config_resolve` (platform + organization layers, ~2 KB each) per call,
with the Redis cache and without it (`use_cache=False`: two queries), and per request at the HTTP
layer (`GET /api/v1/config/agents/worker/` through Django's test client, in process, with the
cache and with `agents.config_cache.read` bypassed).

    .venv/bin/python bench/agents_bench.py [--rounds 5] [--duration 4] [--clients 8]

Set BENCH_REDIS_URL (the cache) and, to keep apart from others, BENCH_DATABASE_PREFIX.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    PYTHON,
    REDIS_URL,
    ROOT,
    database_url,
    django_env,
    ensure_database,
    machine_facts,
    median,
)

SLUG = "agents-bench"
OWNER_EMAIL = f"owner@{SLUG}.test"
PASSWORD = "bench-password-correct-horse"
RESULTS = ROOT / "bench" / "results" / "agents.json"

SETUP = f"""
import django
django.setup()
from agents import services
from agents.models import Agent
from core.actors import Actor
from tenants import context
from organizations import services as tenant_services
from tenants.models import Tenant

actor = Actor.system("bench")
with context.public_context():
    tenant = Tenant.objects.filter(slug={SLUG!r}).first()
    if tenant is None:
        tenant = tenant_services.provision_tenant(
            actor=actor, slug={SLUG!r}, name="Agents bench", owner_email={OWNER_EMAIL!r},
            owner_password={PASSWORD!r}, plan_slug="enterprise",
        )
# A pool that never refuses: the benchmark measures the path, not the refusals.
services.organization_limits_set(actor=actor, tenant=tenant, overrides={{
    "max_agents": 1_000_000, "max_instances": 100_000_000,
    "max_cpu_millicores": 2_000_000_000, "max_memory_mb": 2_000_000_000,
}})
blob = {{f"key{{n}}": {{"threshold": n, "labels": ["a", "b", "c"], "on": n % 2 == 0}}
        for n in range(30)}}
services.platform_config_default_set(actor=actor, key="agents.defaults",
                                     value={{"model": "small", "platform": blob}})
with context.tenant_context(tenant):
    services.config_set(actor=actor, key="agents.defaults",
                        value={{"model": "large", "organization": blob}})
    services.config_set(actor=actor, key="agents.worker", value={{"worker": blob}})
    for name in ("bench-worker", "bench-probe"):
        if not Agent.objects.filter(name=name).exists():
            services.agent_create(actor=actor, name=name, type="worker", cpu="10m", memory="1MB")
print("ready")
"""

# One client: connects, says it is ready, waits for "go", requests instances for `duration`
# seconds (or exactly once for a duration of 0), prints how many.
CLIENT = f"""
import json, sys, time
import django
django.setup()
from agents import services
from core.errors import QuotaExceeded
from agents.models import Agent, ResourcePool
from core.actors import Actor
from tenants import context
from tenants.models import Tenant

mode, duration, agent_name = sys.argv[1], float(sys.argv[2]), sys.argv[3]
if mode == "unlocked":
    # The baseline: the same service, reading the pool row without locking it.
    services._locked_pool = lambda: ResourcePool.objects.get(pk=1)
with context.public_context():
    tenant = Tenant.objects.select_related("plan").get(slug={SLUG!r})
actor = Actor.system("bench client")
with context.tenant_context(tenant):
    agent_id = Agent.objects.get(name=agent_name).pk
    print("ready", flush=True)
    sys.stdin.readline()
    done = refused = 0
    deadline = time.time() + duration
    while True:  # a duration of 0: exactly one request (the correctness probe)
        try:
            services.instance_request(actor=actor, agent_id=agent_id)
            done += 1
        except QuotaExceeded:
            refused += 1
        if time.time() >= deadline:
            break
print(json.dumps({{"done": done, "refused": refused}}))
"""

# Room for exactly 3 more instances, for the correctness probe; then a reset.
ROOM = f"""
import sys
import django
django.setup()
from django.db import transaction
from agents import services
from agents.models import AgentInstance, ResourcePool
from core.actors import Actor
from tenants import context
from tenants.models import Tenant

with context.public_context():
    tenant = Tenant.objects.select_related("plan").get(slug={SLUG!r})
with context.tenant_context(tenant), transaction.atomic():
    pool = ResourcePool.objects.select_for_update().get(pk=1)
    allocated = AgentInstance.objects.filter(agent__name="bench-probe", status="pending").count()
    limit = pool.instances + 3 if sys.argv[1] == "room" else 100_000_000
services.organization_limits_set(
    actor=Actor.system("bench"), tenant=tenant, overrides={{"max_instances": limit}}
)
print(allocated)
"""

CONFIG = f"""
import json, sys, time
import django
django.setup()
from django.conf import settings
from django.test import Client
from agents import config_cache, selectors
from accounts.models import User
from core.actors import Actor
from tenants import context
from tenants.models import Tenant

rounds, calls, requests = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
assert settings.CACHES["default"]["BACKEND"].endswith("RedisCache"), "set BENCH_REDIS_URL"
with context.public_context():
    tenant = Tenant.objects.select_related("plan").get(slug={SLUG!r})
actor = Actor.system("bench")
read = config_cache.read

def uncached_read(requests_, load):
    return {{namespace: load(namespace, list(keys)) for namespace, keys in requests_.items()}}

client = Client(HTTP_HOST=tenant.host)
with context.tenant_context(tenant):
    client.force_login(User.objects.get(email={OWNER_EMAIL!r}))
path = "/api/v1/config/agents/worker/"
results = {{"call_cached": [], "call_uncached": [], "http_cached": [], "http_uncached": []}}
with context.tenant_context(tenant):
    expected = selectors.config_resolve(actor=actor, agent_type="worker", use_cache=False).value
    assert selectors.config_resolve(actor=actor, agent_type="worker").value == expected
for _ in range(rounds):
    for use_cache in (True, False):
        with context.tenant_context(tenant):
            started = time.perf_counter()
            for _ in range(calls):
                selectors.config_resolve(actor=actor, agent_type="worker", use_cache=use_cache)
            elapsed = time.perf_counter() - started
        results["call_cached" if use_cache else "call_uncached"].append(elapsed / calls)
    for cached in (True, False):
        config_cache.read = read if cached else uncached_read
        assert client.get(path).json()["config"] == expected
        started = time.perf_counter()
        for _ in range(requests):
            client.get(path)
        elapsed = time.perf_counter() - started
        results["http_cached" if cached else "http_uncached"].append(elapsed / requests)
    config_cache.read = read
print(json.dumps(results))
"""


def run(code: str, env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [PYTHON, "-c", code, *args], cwd=ROOT, env=env, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-4000:])
    return done.stdout.strip().splitlines()[-1]


def race(env: dict[str, str], mode: str, clients: int, duration: float, agent: str) -> list[dict]:
    """Start `clients` processes, release them together once all are connected; their results."""
    processes = [
        subprocess.Popen(
            [PYTHON, "-c", CLIENT, mode, str(duration), agent],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(clients)
    ]
    for process in processes:
        line = process.stdout.readline().strip()
        if line != "ready":
            raise RuntimeError(f"client not ready: {line!r} {process.stderr.read()[-4000:]}")
    for process in processes:
        process.stdin.write("go\n")
        process.stdin.flush()
    results = []
    for process in processes:
        out, err = process.communicate(timeout=duration + 120)
        if process.returncode != 0:
            raise RuntimeError(err[-4000:])
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=float, default=4.0, help="seconds per round")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--probes", type=int, default=5, help="room-for-3 probes per mode")
    parser.add_argument("--calls", type=int, default=2000, help="config reads per round")
    parser.add_argument("--requests", type=int, default=300, help="config HTTP GETs per round")
    args = parser.parse_args()
    if not REDIS_URL:
        sys.exit("set BENCH_REDIS_URL (or REDIS_URL): the config cache is Redis")

    database = database_url("agents")
    ensure_database(database)
    env = django_env(database, PORTAL_PORT="", PORTAL_SCHEME="http")
    run(SETUP, env)

    rates: dict[str, list[float]] = {"locked": [], "unlocked": []}
    for _ in range(args.rounds):
        for mode in ("locked", "unlocked"):
            results = race(env, mode, args.clients, args.duration, "bench-worker")
            rates[mode].append(sum(r["done"] for r in results) / args.duration)

    # Correctness: `clients` clients, one request each, against room for 3.
    allocated: dict[str, list[int]] = {"locked": [], "unlocked": []}
    for _ in range(args.probes):
        for mode in ("locked", "unlocked"):
            run(ROOM, env, "room")
            race(env, mode, args.clients, 0, "bench-probe")
            allocated[mode].append(int(run(ROOM, env, "reset")))
            # Stop the probe's instances so that the next probe starts from the same place.
            run(STOP, env)

    config = json.loads(run(CONFIG, env, str(args.rounds), str(args.calls), str(args.requests)))

    facts = machine_facts(database)
    result = {
        "facts": facts,
        "args": vars(args),
        "instance_requests_per_second": rates,
        "instance_requests_per_second_median": {m: median(v) for m, v in rates.items()},
        "room_for_3_allocated": allocated,
        "config_seconds": config,
        "config_seconds_median": {name: median(values) for name, values in config.items()},
    }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2))

    locked, unlocked = (result["instance_requests_per_second_median"][m] for m in rates)
    us = {name: value * 1e6 for name, value in result["config_seconds_median"].items()}
    print(
        f"machine: nproc {facts['nproc']}, memory {facts['memory']}, {facts['arch']}, "
        f"PostgreSQL {facts['postgresql']}, Python {facts['python']}; {facts['date']}"
    )
    print(f"command: .venv/bin/python bench/agents_bench.py {' '.join(sys.argv[1:])}".rstrip())
    print(f"| instance_request, {args.clients} concurrent clients | requests/s (median) | ratio |")
    print("| --- | ---: | ---: |")
    print(f"| with the pool row lock (the service) | {locked:,.0f} | {locked / unlocked:.2f} |")
    print(f"| without the lock (baseline) | {unlocked:,.0f} | 1 |")
    print(
        f"| room for 3, {args.clients} clients, {args.probes} probes: instances allocated "
        f"| locked {allocated['locked']} | unlocked {allocated['unlocked']} |"
    )
    print("| resolved config (`agents.worker`) | median | uncached / cached |")
    print("| --- | ---: | ---: |")
    print(
        f"| `config_resolve`, Redis cache | {us['call_cached']:,.0f} µs "
        f"| {us['call_uncached'] / us['call_cached']:.2f}x |"
    )
    print(f"| `config_resolve`, no cache (2 queries) | {us['call_uncached']:,.0f} µs | 1x |")
    print(
        f"| `GET /api/v1/config/agents/worker/`, cache | {us['http_cached']:,.0f} µs "
        f"| {us['http_uncached'] / us['http_cached']:.2f}x |"
    )
    print(f"| `GET /api/v1/config/agents/worker/`, no cache | {us['http_uncached']:,.0f} µs | 1x |")


STOP = f"""
import django
django.setup()
from agents import services
from agents.models import AgentInstance
from core.actors import Actor
from tenants import context
from tenants.models import Tenant

with context.public_context():
    tenant = Tenant.objects.select_related("plan").get(slug={SLUG!r})
with context.tenant_context(tenant):
    for instance in AgentInstance.objects.filter(agent__name="bench-probe", status="pending"):
        services.instance_stop(
            actor=Actor.system("bench"), agent_id=instance.agent_id, instance_id=instance.pk
        )
print("stopped")
"""


if __name__ == "__main__":
    main()

"""Request-routing benchmark: tenant-routed JSON views against the same views unrouted, gunicorn.

Three gunicorn servers (sync workers) run side by side on loopback, all with the product's
settings and middleware stack and the views of bench/routing_app/:
  routed    tenants.middleware.TenantRoutingMiddleware (host lookup cached per process; the
            schema is set once, or not at all when the connection already has it)
  unrouted  the same stack without any tenant middleware (requests stay in `public`)
  stock     django-tenants' TenantMainMiddleware (domain query + two `SET search_path`)
wrk drives one server at a time, in alternating rounds, for a view without a query
(/bench/ping/) and a view with one small query (/bench/query/: in the tenant's schema when
routed, in `public` when not). The figures are requests per second (median of the rounds, the
ratio of medians to `unrouted`, and the median of each round's ratio to the `unrouted` round
beside it) and the workers' CPU time per request (from /proc), which other load on a shared
machine disturbs much less than throughput.

    .venv/bin/python bench/routing.py [--rounds 8] [--duration 5] [--workers 2] [--connections 4]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
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
)

SLUG = "routing-bench"
HOST = f"{SLUG}.localhost"
OWNER_EMAIL = f"owner@{SLUG}.test"
STAFF_EMAIL = "staff@routing-bench.test"
PASSWORD = "bench-password-correct-horse"
VARIANTS = ("routed", "unrouted", "stock")
VIEWS = {"ping": "/bench/ping/", "query": "/bench/query/"}
FIRST_PORT = int(os.environ.get("BENCH_ROUTING_PORT", "8250"))


def prepare(database: str) -> None:
    """Create the organization and a public-schema user (idempotent), in a child process."""
    code = f"""
import django
django.setup()
from accounts import services as accounts
from accounts.models import User
from core.actors import Actor
from tenants import context
from organizations import services
from tenants.models import Tenant
actor = Actor.system("bench")
with context.public_context():
    if not Tenant.objects.filter(slug={SLUG!r}).exists():
        services.provision_tenant(actor=actor, slug={SLUG!r}, name="Routing bench",
                                  owner_email={OWNER_EMAIL!r}, owner_password={PASSWORD!r})
    if not User.objects.filter(email={STAFF_EMAIL!r}).exists():
        accounts.staff_user_create(actor=actor, email={STAFF_EMAIL!r}, password={PASSWORD!r})
"""
    subprocess.run([PYTHON, "-c", code], cwd=ROOT, env=django_env(database), check=True)


def start_servers(database: str, workers: int) -> dict[str, tuple[subprocess.Popen, int]]:
    servers = {}
    for offset, variant in enumerate(VARIANTS):
        port = FIRST_PORT + offset
        env = django_env(
            database,
            DJANGO_SETTINGS_MODULE=f"routing_app.settings_{variant}",
            PORTAL_PORT="",
        )
        process = subprocess.Popen(
            [
                str(ROOT / ".venv" / "bin" / "gunicorn"),
                "portal.wsgi:application",
                "--worker-class",
                "sync",
                "--workers",
                str(workers),
                "--bind",
                f"127.0.0.1:{port}",
                "--chdir",
                str(ROOT),
                "--pythonpath",
                str(ROOT / "bench"),
                "--log-level",
                "warning",
            ],
            env=env,
        )
        servers[variant] = (process, port)
    return servers


def fetch(port: int, path: str) -> dict:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers={"Host": HOST})
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())


def wait_and_verify(servers: dict[str, tuple[subprocess.Popen, int]]) -> dict[str, dict]:
    """Wait for every server, and check that each variant reads the schema it should."""
    seen: dict[str, dict] = {}
    deadline = time.monotonic() + 60
    for variant, (process, port) in servers.items():
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{variant} server exited with {process.returncode}")
            try:
                seen[variant] = {name: fetch(port, path) for name, path in VIEWS.items()}
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
    tenant_schema = "t_" + SLUG.replace("-", "_")
    for variant in ("routed", "stock"):
        assert seen[variant]["ping"]["schema"] == tenant_schema, seen[variant]
        assert seen[variant]["query"]["user"][1] == OWNER_EMAIL, seen[variant]
    assert seen["unrouted"]["ping"]["schema"] == "public", seen["unrouted"]
    assert seen["unrouted"]["query"]["user"][1] == STAFF_EMAIL, seen["unrouted"]
    return seen


def wrk(port: int, path: str, duration: float, connections: int) -> tuple[float, int]:
    """Requests per second and the number of requests of one wrk run."""
    output = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{duration:g}s",
            "-H",
            f"Host: {HOST}",
            f"http://127.0.0.1:{port}{path}",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    if "Non-2xx" in output or "Socket errors" in output:
        raise RuntimeError(f"wrk saw errors:\n{output}")
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))
    return rate, int(re.search(r"(\d+) requests in", output).group(1))


def workers_cpu_seconds(master: subprocess.Popen) -> float:
    """User + system CPU time used so far by a gunicorn master's workers (from /proc)."""
    children = Path(f"/proc/{master.pid}/task/{master.pid}/children").read_text().split()
    ticks = 0
    for pid in children:
        # Fields after the command name: state is field 3, utime 14 and stime 15 (proc(5)).
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def measure(
    server: tuple[subprocess.Popen, int], path: str, duration: float, connections: int
) -> tuple[float, float]:
    """One round: requests per second, and worker CPU microseconds per request."""
    process, port = server
    cpu_before = workers_cpu_seconds(process)
    rate, requests = wrk(port, path, duration, connections)
    cpu = workers_cpu_seconds(process) - cpu_before
    return rate, cpu / requests * 1e6


def stop(servers: dict[str, tuple[subprocess.Popen, int]]) -> None:
    for process, _port in servers.values():
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process, _port in servers.values():
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per wrk round")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn sync workers per server")
    parser.add_argument("--connections", type=int, default=4, help="wrk connections")
    args = parser.parse_args()

    # A SIGTERM still runs the `finally` below, so that no gunicorn is left behind.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    database = database_url("routing")
    ensure_database(database)
    prepare(database)
    servers = start_servers(database, args.workers)
    rates: dict[str, dict[str, list[float]]] = {
        view: {variant: [] for variant in VARIANTS} for view in VIEWS
    }
    cpu_per_request: dict[str, dict[str, list[float]]] = {
        view: {variant: [] for variant in VARIANTS} for view in VIEWS
    }
    try:
        wait_and_verify(servers)
        for _variant, (_process, port) in servers.items():  # warm every worker up
            for path in VIEWS.values():
                wrk(port, path, 1, args.connections)
        for round_number in range(args.rounds):
            for view, path in VIEWS.items():
                # Rotate who goes first, so that no variant always follows the same neighbour.
                shift = round_number % len(VARIANTS)
                for variant in VARIANTS[shift:] + VARIANTS[:shift]:
                    rate, cpu = measure(servers[variant], path, args.duration, args.connections)
                    rates[view][variant].append(rate)
                    cpu_per_request[view][variant].append(cpu)
            print(f"  round {round_number + 1}/{args.rounds}", file=sys.stderr, flush=True)
    finally:
        stop(servers)

    facts = machine_facts(database)
    command = "bench/routing.py " + " ".join(sys.argv[1:])
    lines = [
        f"Command: `{command.strip()}`  ",
        f"Date: {facts['date']}; {facts['nproc']} CPUs, {facts['memory']}, {facts['arch']}, "
        f"PostgreSQL {facts['postgresql']}, Python {facts['python']}; gunicorn "
        f"{args.workers} sync workers per server; wrk -t1 -c{args.connections} "
        f"-d{args.duration:g}s x {args.rounds} rounds per variant and view",
        "",
        "| view | variant | median req/s | min | max | ratio of medians | median of round ratios "
        "| worker CPU per request (median) | CPU ratio |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    summary = {}
    for view in VIEWS:
        base = median(rates[view]["unrouted"])
        for variant in VARIANTS:
            values = rates[view][variant]
            # Paired: each round's rate over the unrouted rate of the same round (drift cancels).
            paired = median([a / b for a, b in zip(values, rates[view]["unrouted"], strict=True)])
            cpu = median(cpu_per_request[view][variant])
            # CPU ratio: unrouted CPU per request over this variant's (1.0 = costs the same);
            # what the throughput ratio would be on a machine with nothing else running.
            cpu_ratio = median(cpu_per_request[view]["unrouted"]) / cpu
            summary[f"{view}/{variant}"] = {
                "median": median(values),
                "ratio": median(values) / base,
                "paired_ratio": paired,
                "cpu_us_per_request": cpu,
                "cpu_ratio": cpu_ratio,
            }
            lines.append(
                f"| {view} | {variant} | {median(values):.0f} | {min(values):.0f} "
                f"| {max(values):.0f} | {median(values) / base:.3f} | {paired:.3f} "
                f"| {cpu:.0f} µs | {cpu_ratio:.3f} |"
            )
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "routing.json").write_text(
        json.dumps(
            {
                "facts": facts,
                "args": vars(args),
                "rates": rates,
                "cpu_us_per_request": cpu_per_request,
                "summary": summary,
            }
        )
    )
    print("\n".join(lines))


if __name__ == "__main__":
    main()

"""API read path and deployment topology: `GET /api/v1/agents/` against its floors, with wrk.

Part `reads`: one gunicorn server (2 sync workers, the product's settings and middleware,
persistent connections, Redis) serves both the product's `GET /api/v1/agents/` (an `Api-Key`,
20 agents) and the floor, a bare Django view reading the same rows with one query
(bench/api_app/views.py), on two organizations: `small` (20 agents, 20 instances) and `big`
(the same, plus 100,000 stopped instances in one agent's history). The four variants take turns
in a rotating order, round by round.

Part `topology`: the recommended production topology (docs/gateway.md, "Deployment"): nginx
routing `/ws/` to uvicorn and everything else to gunicorn, against gunicorn alone (the same
number of workers), on the same API request, alternating round by round.

    .venv/bin/python bench/api_read.py [--parts reads,topology] [--rounds 7] [--duration 4]

Set BENCH_REDIS_URL and BENCH_DATABASE_PREFIX; ports BENCH_PORT_BASE (default 9310) to +9.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
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

PORT_BASE = int(os.environ.get("BENCH_PORT_BASE", "9310"))
ORGS = {"small": "reads-small", "big": "reads-big"}
PASSWORD = "bench-password-correct-horse"
AGENTS = 20
HISTORY = 100_000
RESULTS = ROOT / "bench" / "results"

SETUP = f"""
import json
import django
django.setup()
from django.db import connection
from accounts.models import User
from agents import services
from agents.models import Agent, AgentInstance
from core.actors import Actor
from credentials import services as credentials
from organizations import services as tenant_services
from tenants import context
from tenants.models import Tenant

system = Actor.system("bench")
keys = {{}}
for label, slug in {ORGS!r}.items():
    with context.public_context():
        tenant = Tenant.objects.filter(slug=slug).first()
        if tenant is None:
            tenant = tenant_services.provision_tenant(
                actor=system, slug=slug, name=slug, owner_email=f"owner@{{slug}}.test",
                owner_password={PASSWORD!r}, plan_slug="enterprise",
            )
    services.organization_limits_set(actor=system, tenant=tenant, overrides={{
        "max_agents": 1000, "max_instances": 1_000_000,
        "max_cpu_millicores": 2_000_000_000, "max_memory_mb": 2_000_000_000,
    }})
    with context.tenant_context(tenant):
        owner = User.objects.get(email=f"owner@{{slug}}.test")
        for n in range({AGENTS} - Agent.objects.count()):
            agent = services.agent_create(actor=system, name=f"agent-{{n:02d}}", type="worker",
                                          cpu="100m", memory="64MB",
                                          config={{"model": "small", "n": n}})
            services.instance_request(actor=system, agent_id=agent.pk)
        first = Agent.objects.order_by("name").first()
        stopped = AgentInstance.objects.filter(agent=first, status="stopped").count()
        if label == "big" and stopped < {HISTORY}:
            # History only: stopped instances hold nothing from the pool.
            with connection.cursor() as cursor:
                cursor.execute(
                    "INSERT INTO agents_agentinstance (id, agent_id, status, namespace,"
                    " cpu_millicores, memory_mb, requested_by, requested_at, stopped_at)"
                    " SELECT gen_random_uuid(), %s, 'stopped', 'bench', 100, 64, 'bench',"
                    " now() - make_interval(secs => g), now() - make_interval(secs => g)"
                    " FROM generate_series(1, %s) AS g",
                    [first.pk, {HISTORY} - stopped],
                )
                cursor.execute("ANALYZE agents_agentinstance")
        _, raw = credentials.api_key_create(actor=Actor.for_user(owner), name="bench",
                                            scopes=["agents:read"])
        keys[label] = raw
print("KEYS " + json.dumps(keys))
"""

NGINX_CONF = """
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    upstream http_app {{ server 127.0.0.1:{http_port}; keepalive 16; }}
    upstream ws_app {{ server 127.0.0.1:{ws_port}; }}
    map $http_upgrade $connection_upgrade {{ default upgrade; '' close; }}
    server {{
        listen 127.0.0.1:{port};
        location /ws/ {{
            proxy_pass http://ws_app;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_read_timeout 3600s;
        }}
        location / {{
            proxy_pass http://http_app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        }}
    }}
}}
"""


def prepare(database: str) -> dict[str, str]:
    result = subprocess.run(
        [PYTHON, "-c", SETUP],
        cwd=ROOT,
        env=django_env(database),
        check=True,
        capture_output=True,
        text=True,
    )
    line = next(line for line in result.stdout.splitlines() if line.startswith("KEYS "))
    return json.loads(line.removeprefix("KEYS "))


def gunicorn(database: str, port: int, workers: int) -> subprocess.Popen:
    env = django_env(database, DJANGO_SETTINGS_MODULE="api_app.settings", PORTAL_PORT="")
    return subprocess.Popen(
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


def uvicorn(database: str, port: int) -> subprocess.Popen:
    env = django_env(database, DJANGO_SETTINGS_MODULE="api_app.settings", PORTAL_PORT="")
    return subprocess.Popen(
        [
            PYTHON,
            "-m",
            "uvicorn",
            "portal.asgi:application",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--ws",
            "websockets-sansio",
            "--log-level",
            "warning",
            "--app-dir",
            str(ROOT / "bench"),
        ],
        cwd=ROOT,
        env=env,
    )


def fetch(port: int, path: str, host: str, key: str | None = None) -> tuple[int, dict]:
    headers = {"Host": host}
    if key:
        headers["Authorization"] = f"Api-Key {key}"
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers)
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, json.loads(response.read())


def wait_for(process: subprocess.Popen, port: int, host: str) -> None:
    deadline = time.monotonic() + 90
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"server on {port} exited with {process.returncode}")
        try:
            fetch(port, "/bench/bare-agents/", host)
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def wrk(port: int, path: str, host: str, key: str | None, duration: float, connections: int):
    command = ["wrk", "-t1", f"-c{connections}", f"-d{duration:g}s", "-H", f"Host: {host}"]
    if key:
        command += ["-H", f"Authorization: Api-Key {key}"]
    output = subprocess.run(
        [*command, f"http://127.0.0.1:{port}{path}"], capture_output=True, text=True, check=True
    ).stdout
    if "Non-2xx" in output or "Socket errors" in output:
        raise RuntimeError(f"wrk saw errors:\n{output}")
    return float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))


def stop(*processes: subprocess.Popen) -> None:
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()


def rounds(variants: dict, count: int, measure) -> dict[str, list[float]]:
    rates: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    for number in range(count):
        shift = number % len(names)
        for name in names[shift:] + names[:shift]:
            rates[name].append(measure(variants[name]))
        print(f"  round {number + 1}/{count}", file=sys.stderr, flush=True)
    return rates


def summarise(rates: dict[str, list[float]], pairs: list[tuple[str, str]]) -> dict:
    summary = {
        name: {"median": median(values), "min": min(values), "max": max(values)}
        for name, values in rates.items()
    }
    for name, floor in pairs:
        summary[f"{name}/{floor}"] = {
            "ratio_of_medians": median(rates[name]) / median(rates[floor]),
            "median_of_round_ratios": median(
                [a / b for a, b in zip(rates[name], rates[floor], strict=True)]
            ),
        }
    return summary


def part_reads(database: str, keys: dict[str, str], args) -> dict:
    port = PORT_BASE
    server = gunicorn(database, port, args.workers)
    try:
        hosts = {label: f"{slug}.localhost" for label, slug in ORGS.items()}
        wait_for(server, port, hosts["small"])
        for label in ORGS:  # what each variant serves, checked once
            status, body = fetch(port, "/api/v1/agents/", hosts[label], keys[label])
            assert status == 200 and body["count"] == AGENTS, body  # noqa: S101
            assert len(body["results"]) == AGENTS  # noqa: S101
            status, bare = fetch(port, "/bench/bare-agents/", hosts[label])
            assert [a["id"] for a in body["results"]] == [a["id"] for a in bare["results"]]  # noqa: S101
        variants = {
            "api_small": ("/api/v1/agents/", hosts["small"], keys["small"]),
            "bare_small": ("/bench/bare-agents/", hosts["small"], None),
            "api_big": ("/api/v1/agents/", hosts["big"], keys["big"]),
            "bare_big": ("/bench/bare-agents/", hosts["big"], None),
        }
        for path, host, key in variants.values():  # warm every worker
            wrk(port, path, host, key, 1, args.connections)
        rates = rounds(
            variants,
            args.rounds,
            lambda v: wrk(port, v[0], v[1], v[2], args.duration, args.connections),
        )
    finally:
        stop(server)
    return {
        "rates": rates,
        "summary": summarise(
            rates,
            [("api_small", "bare_small"), ("api_big", "bare_big"), ("api_big", "api_small")],
        ),
    }


def part_topology(database: str, keys: dict[str, str], args) -> dict:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    alone_port, proxy_port, http_port, ws_port = (
        PORT_BASE + 1,
        PORT_BASE + 2,
        PORT_BASE + 3,
        PORT_BASE + 4,
    )
    tmp = Path(tempfile.mkdtemp(prefix="bench-nginx-"))
    (tmp / "nginx.conf").write_text(
        NGINX_CONF.format(tmp=tmp, port=proxy_port, http_port=http_port, ws_port=ws_port)
    )
    host = f"{ORGS['small']}.localhost"
    alone = gunicorn(database, alone_port, args.workers)
    behind = gunicorn(database, http_port, args.workers)
    ws = uvicorn(database, ws_port)
    proxy = subprocess.Popen(
        [nginx, "-p", str(tmp), "-c", str(tmp / "nginx.conf"), "-g", "daemon off;"]
    )
    try:
        wait_for(alone, alone_port, host)
        wait_for(behind, http_port, host)
        wait_for(proxy, proxy_port, host)
        # The WebSocket route reaches uvicorn: a socket without credentials is answered there.
        probe = subprocess.run(
            [
                "curl",
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "-m",
                "5",
                "-H",
                f"Host: {host}",
                "-H",
                "Connection: Upgrade",
                "-H",
                "Upgrade: websocket",
                "-H",
                "Sec-WebSocket-Version: 13",
                "-H",
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
                f"http://127.0.0.1:{proxy_port}/ws/events/",
            ],
            capture_output=True,
            text=True,
        ).stdout
        path = "/api/v1/agents/"
        variants = {"gunicorn_alone": alone_port, "nginx_topology": proxy_port}
        for port in variants.values():
            wrk(port, path, host, keys["small"], 1, args.connections)
        rates = rounds(
            variants,
            args.rounds,
            lambda port: wrk(port, path, host, keys["small"], args.duration, args.connections),
        )
    finally:
        stop(proxy, ws, behind, alone)
        shutil.rmtree(tmp, ignore_errors=True)
    return {
        "websocket_probe_status": probe,
        "rates": rates,
        "summary": summarise(rates, [("nginx_topology", "gunicorn_alone")]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="reads,topology")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--duration", type=float, default=4.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--connections", type=int, default=4)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    database = database_url("api")
    ensure_database(database)
    keys = prepare(database)
    results: dict = {"args": vars(args), "facts": machine_facts(database)}
    parts = args.parts.split(",")
    if "reads" in parts:
        results["reads"] = part_reads(database, keys, args)
    if "topology" in parts:
        results["topology"] = part_topology(database, keys, args)
    with open("/proc/loadavg") as load:
        results["facts"]["loadavg_after"] = load.read().strip()
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "api_read.json").write_text(json.dumps(results, indent=1))
    for name in ("reads", "topology"):
        if name in results:
            print(name, json.dumps(results[name]["summary"], indent=1))


if __name__ == "__main__":
    main()

"""API identity benchmark: the cost of authenticating a request, per scheme.

Part 1 (in one process, against a real PostgreSQL): the time to verify one request's credential
  api_key   credentials.authentication.verify_api_key: checksum, one indexed lookup by the key's
            public id (with its creator), HMAC-SHA-256 of the secret, constant-time comparison
  jwt       credentials.authentication.verify_jwt: RS256 signature with the keyring's cached public
            key, claims (aud, iss, exp, tenant, type), one query for the account
  bcrypt    the naive design it replaces: keys stored as bcrypt(cost 10) hashes, no lookup id,
            so a request scans all 100 of the organization's keys (a key that matches none,
            or the last one: every hash is tried)
measured in alternating rounds in the same run; the figure is the median time per request.

Part 2: a small authenticated endpoint (GET /api/v1/organization/) on gunicorn (sync workers),
driven by wrk with each scheme's `Authorization` header in alternating rounds: requests/second.

    .venv/bin/python bench/auth_bench.py [--rounds 5] [--duration 5] [--workers 2]
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

SLUG = "auth-bench"
HOST = f"{SLUG}.localhost"
OWNER_EMAIL = f"owner@{SLUG}.test"
PASSWORD = "bench-password-correct-horse"
PORT = int(os.environ.get("BENCH_AUTH_PORT", "8210"))
PATH = "/api/v1/organization/"
RESULTS = ROOT / "bench" / "results" / "auth.json"

PREPARE = f"""
import json
import django
django.setup()
from accounts.models import User
from core.actors import Actor
from credentials import services as credentials
from tenants import context
from organizations import services
from tenants.models import Tenant
actor = Actor.system("bench")
with context.public_context():
    tenant = Tenant.objects.filter(slug={SLUG!r}).first()
    if tenant is None:
        tenant = services.provision_tenant(actor=actor, slug={SLUG!r}, name="Auth bench",
                                           owner_email={OWNER_EMAIL!r}, owner_password={PASSWORD!r})
with context.tenant_context(tenant):
    owner = User.objects.get(email={OWNER_EMAIL!r})
    _, raw = credentials.api_key_create(actor=Actor.for_user(owner), name="bench",
                                        scopes=["org:read"])
    pair = credentials.token_pair_issue(actor=Actor.for_user(owner), user=owner)
print(json.dumps({{"api_key": raw, "access": pair.access}}))
"""

MEASURE = f"""
import json, sys, time
import bcrypt, django
django.setup()
from tenants import context
from credentials import api_keys
from credentials.authentication import verify_api_key, verify_jwt
from tenants.models import Tenant
secrets = json.loads(sys.argv[1]); rounds = int(sys.argv[2]); per_round = int(sys.argv[3])
with context.public_context():
    tenant = Tenant.objects.select_related("plan").get(slug={SLUG!r})
# The naive design: 100 keys as bcrypt(cost 10) hashes; the presented key is tried against each.
stored = [bcrypt.hashpw(api_keys.generate()[0].encode(), bcrypt.gensalt(10)) for _ in range(100)]
presented = secrets["api_key"].encode()

def bcrypt_scan():
    for hashed in stored:
        if bcrypt.checkpw(presented, hashed):
            return True
    return False

results = {{"api_key": [], "jwt": [], "bcrypt": []}}
with context.tenant_context(tenant):
    verify_api_key(secrets["api_key"], tenant); verify_jwt(secrets["access"], tenant)  # warm
    for _ in range(rounds):
        for name, call, count in (
            ("api_key", lambda: verify_api_key(secrets["api_key"], tenant), per_round),
            ("jwt", lambda: verify_jwt(secrets["access"], tenant), per_round),
            ("bcrypt", bcrypt_scan, 1),
        ):
            started = time.perf_counter()
            for _ in range(count):
                call()
            results[name].append((time.perf_counter() - started) / count)
print(json.dumps(results))
"""


def wrk(header: str, duration: float, connections: int) -> float:
    output = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{duration:g}s",
            "-H",
            f"Host: {HOST}",
            "-H",
            f"Authorization: {header}",
            f"http://127.0.0.1:{PORT}{PATH}",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    if "Non-2xx" in output or "Socket errors" in output:
        raise RuntimeError(f"wrk saw errors:\n{output}")
    return float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))


def fetch(header: str) -> int:
    request = urllib.request.Request(
        f"http://127.0.0.1:{PORT}{PATH}", headers={"Host": HOST, "Authorization": header}
    )
    with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
        return response.status


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--per-round", type=int, default=2000, help="verifications per round")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per wrk round")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--connections", type=int, default=4)
    args = parser.parse_args()

    database = database_url("auth")
    ensure_database(database)
    env = django_env(database, PORTAL_PORT="", PORTAL_SCHEME="http")
    secrets = json.loads(
        subprocess.run(
            [PYTHON, "-c", PREPARE], cwd=ROOT, env=env, check=True, capture_output=True, text=True
        )
        .stdout.strip()
        .splitlines()[-1]
    )

    measured = json.loads(
        subprocess.run(
            [PYTHON, "-c", MEASURE, json.dumps(secrets), str(args.rounds), str(args.per_round)],
            cwd=ROOT,
            env=env,
            check=True,
            capture_output=True,
            text=True,
        )
        .stdout.strip()
        .splitlines()[-1]
    )
    per_request = {name: median(values) for name, values in measured.items()}

    server = subprocess.Popen(
        [
            str(ROOT / ".venv" / "bin" / "gunicorn"),
            "portal.wsgi:application",
            "--bind",
            f"127.0.0.1:{PORT}",
            "--workers",
            str(args.workers),
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        env=env,
    )
    headers = {"jwt": f"Bearer {secrets['access']}", "api_key": f"Api-Key {secrets['api_key']}"}
    rps: dict[str, list[float]] = {name: [] for name in headers}
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if all(fetch(header) == 200 for header in headers.values()):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        for header in headers.values():  # warm every worker's caches
            wrk(header, 1, args.connections)
        for _ in range(args.rounds):
            for name, header in headers.items():
                rps[name].append(wrk(header, args.duration, args.connections))
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()

    facts = machine_facts(database)
    result = {
        "facts": facts,
        "args": vars(args),
        "per_request_seconds": measured,
        "per_request_median_seconds": per_request,
        "requests_per_second": rps,
        "requests_per_second_median": {name: median(values) for name, values in rps.items()},
    }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2))

    us = {name: value * 1e6 for name, value in per_request.items()}
    rps_median = result["requests_per_second_median"]
    print(
        f"machine: nproc {facts['nproc']}, memory {facts['memory']}, {facts['arch']}, "
        f"PostgreSQL {facts['postgresql']}, Python {facts['python']}; {facts['date']}"
    )
    print(f"command: .venv/bin/python bench/auth_bench.py {' '.join(sys.argv[1:])}".rstrip())
    print("| credential check per request | median | vs bcrypt scan |")
    print("| --- | ---: | ---: |")
    for name, label in (
        ("api_key", "API key (HMAC-SHA-256, indexed lookup)"),
        ("jwt", "JWT (RS256 verify + account lookup)"),
        ("bcrypt", "bcrypt(cost 10) scan of 100 keys (naive)"),
    ):
        print(
            f"| {label} | {us[name]:,.0f} µs | {us['bcrypt'] / us[name]:,.0f}x faster |"
            if name != "bcrypt"
            else f"| {label} | {us[name]:,.0f} µs | 1x |"
        )
    print(
        f"| `GET {PATH}` on gunicorn ({args.workers} sync workers, wrk -c{args.connections}) "
        "| requests/s (median) | |"
    )
    for name, label in (("jwt", "Bearer JWT"), ("api_key", "Api-Key")):
        print(f"| {label} | {rps_median[name]:,.0f} | |")


if __name__ == "__main__":
    main()

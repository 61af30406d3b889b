"""Billing's request-path and ledger costs, each beside its floor in the same run.

    .venv/bin/python bench/billing_bench.py [--rounds 7]

1. Rate limit + metering per request (`billing.services.request_admit`: one Lua call) beside a
   bare Redis PING from the same process and client: p50 of each, alternating round by round.
2. API throughput (`GET /api/v1/agents/` with an API key, in process through the whole Django and
   DRF stack) with metering on vs off (BILLING_METERING), alternating round by round.
3. Ingestion of CloudEvents batches of 1,000 `llm.tokens` events (events/s).
4. Rollup of 500,000 hourly counters from Redis into PostgreSQL (5 organizations x 100 hours x
   1,000 counters).
5. A year of hourly buckets for 50 meters (438,000 rows) queried: one meter by day over the year,
   and all 50 meters' totals.

Results: printed and kept in bench/results/billing.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    PYTHON,
    ROOT,
    database_url,
    django_env,
    ensure_database,
    machine_facts,
)

RESULTS = ROOT / "bench" / "results" / "billing.json"
SLUGS = [f"billing-bench-{n}" for n in range(5)]
PARTS = ("admit", "api", "ingest", "rollup", "year")


def inner(rounds: int, parts: set[str]) -> dict:
    import statistics
    import time
    import uuid
    from datetime import UTC, datetime, timedelta

    import django

    django.setup()
    from django.conf import settings
    from django.test import Client
    from django.utils import timezone

    from accounts.models import User
    from billing import ledger, limits, selectors, services
    from billing.ledger import Count
    from billing.models import UsageBucket
    from core.actors import Actor
    from credentials import services as credentials
    from organizations import services as organizations
    from tenants import context, ratelimit
    from tenants.models import Plan, Tenant

    system = Actor.system("bench")
    tenants = []
    with context.public_context():
        for slug in SLUGS:
            tenant = Tenant.objects.filter(slug=slug).first()
            if tenant is None:
                tenant = organizations.provision_tenant(
                    actor=system,
                    slug=slug,
                    name=slug,
                    owner_email=f"owner@{slug}.test",
                    owner_password="bench-password-correct-horse",
                    plan_slug="enterprise",
                )
            tenants.append(Tenant.objects.select_related("plan").get(pk=tenant.pk))
        Plan.objects.filter(slug="enterprise").update(requests_per_minute=10**9)
    limits.forget()
    client = ratelimit.redis_client()
    results: dict = {}

    # 1. One Lua call per request beside a PING ---
    if "admit" in parts:
        per_round = 2000
        samples: dict[str, list[float]] = {"ping": [], "request_admit": []}
        with context.tenant_context(tenants[0]):
            counts = [Count("api_requests", 1, {"api_key": "bench"})]

            def ping():
                client.ping()

            def admit():
                services.request_admit(resource="api", counts=counts)

            for _ in range(200):
                ping()
                admit()
            for index in range(rounds):
                order = [("ping", ping), ("request_admit", admit)]
                if index % 2:
                    order.reverse()
                for name, call in order:
                    timings = []
                    for _ in range(per_round):
                        start = time.perf_counter_ns()
                        call()
                        timings.append(time.perf_counter_ns() - start)
                    samples[name].append(statistics.median(timings) / 1000)
        ping_p50 = statistics.median(samples["ping"])
        admit_p50 = statistics.median(samples["request_admit"])
        results["rate_limit_and_metering"] = {
            "per_round_calls": per_round,
            "ping_p50_us_per_round": samples["ping"],
            "request_admit_p50_us_per_round": samples["request_admit"],
            "ping_p50_us": ping_p50,
            "request_admit_p50_us": admit_p50,
            "ratio": admit_p50 / ping_p50,
        }

    # 2. API throughput, metering on vs off ---
    tenant = tenants[0]
    with context.tenant_context(tenant):
        owner = User.objects.get(email=f"owner@{tenant.slug}.test")
    if "api" in parts:
        with context.tenant_context(tenant):
            _, raw = credentials.api_key_create(
                actor=Actor.for_user(owner),
                name=f"bench {uuid.uuid4().hex[:6]}",
                scopes=["agents:read"],
            )
        http = Client(HTTP_HOST=tenant.host, HTTP_AUTHORIZATION=f"Api-Key {raw}")
        requests = 400
        throughput: dict[str, list[float]] = {"on": [], "off": []}
        for _ in range(50):
            assert http.get("/api/v1/agents/").status_code == 200
        for index in range(rounds):
            order = ["on", "off"] if index % 2 == 0 else ["off", "on"]
            for variant in order:
                settings.BILLING_METERING = variant == "on"
                start = time.perf_counter()
                for _ in range(requests):
                    http.get("/api/v1/agents/")
                throughput[variant].append(requests / (time.perf_counter() - start))
        settings.BILLING_METERING = True
        on, off = statistics.median(throughput["on"]), statistics.median(throughput["off"])
        results["api_throughput"] = {
            "requests_per_round": requests,
            "on_rps_per_round": throughput["on"],
            "off_rps_per_round": throughput["off"],
            "on_rps": on,
            "off_rps": off,
            "ratio": on / off,
        }

    # 3. Ingestion ---
    if "ingest" in parts:
        rates = []
        with context.tenant_context(tenant):
            actor = Actor.for_user(owner)
            for _ in range(rounds):
                batch = [
                    {
                        "specversion": "1.0",
                        "id": uuid.uuid4().hex,
                        "source": "bench/runtime",
                        "type": "llm.tokens",
                        "data": {"model": f"m{n % 5}", "input_tokens": 100, "output_tokens": 20},
                    }
                    for n in range(1000)
                ]
                start = time.perf_counter()
                ingested = services.usage_events_ingest(actor=actor, events=batch)
                rates.append(1000 / (time.perf_counter() - start))
                assert ingested.counted == 1000
        results["ingestion"] = {
            "batch": 1000,
            "events_per_s_per_round": rates,
            "events_per_s": statistics.median(rates),
        }

    # 4. Rollup of 500,000 counters: into hours without rows (closed hours, the usual case)
    # and onto the same rows again (a flush of hours already rolled up), alternating ---
    if "rollup" in parts:
        services.rollup(actor=system, include_current=True)  # start from an empty Redis ledger
        rollups: dict[str, list[float]] = {"new_rows": [], "existing_rows": []}
        base = datetime(2025, 1, 1, tzinfo=UTC)
        for round_index in range(max(2, rounds)):
            variant = "new_rows" if round_index % 2 == 0 else "existing_rows"
            if variant == "new_rows":
                with context.public_context():
                    UsageBucket.objects.filter(
                        tenant_id__in=[t.pk for t in tenants],
                        hour__gte=base,
                        hour__lt=base + timedelta(hours=100),
                    ).delete()
            pipe = client.pipeline(transaction=False)
            for tenant_row in tenants:
                org = str(tenant_row.public_id)
                for hour_index in range(100):
                    hour = ledger.hour_label(base + timedelta(hours=hour_index))
                    key = ledger.hash_key(org, hour)
                    pipe.hset(
                        key,
                        mapping={
                            ledger.field_of("api_requests", {"api_key": str(n)}): n + 1
                            for n in range(1000)
                        },
                    )
                    pipe.sadd(ledger.PENDING, f"{org}:{hour}")
                    pipe.sadd(ledger.hours_key(org), hour)
                pipe.execute()
            start = time.perf_counter()
            result = services.rollup(actor=system)
            elapsed = time.perf_counter() - start
            assert result.counters == 500_000, result
            rollups[variant].append(elapsed)
        with context.public_context():
            values = UsageBucket.objects.filter(
                tenant_id=tenants[0].pk, hour=base, groups={"api_key": "999"}
            ).values_list("value", flat=True)
            assert list(values) == [1000 * (2 - max(2, rounds) % 2)], list(values)
        results["rollup_500k"] = {
            f"{variant}_seconds_per_round": timings for variant, timings in rollups.items()
        } | {f"{variant}_seconds": statistics.median(t) for variant, t in rollups.items()}

    # 5. A year of hourly buckets for 50 meters ---
    if "year" in parts:
        year_tenant = tenants[1]
        now = timezone.now()
        first_hour = ledger.hour_of(now - timedelta(days=365))
        with context.public_context():
            present = UsageBucket.objects.filter(
                tenant_id=year_tenant.pk, meter__startswith="bench_"
            ).count()
            if present < 50 * 8760:
                UsageBucket.objects.filter(
                    tenant_id=year_tenant.pk, meter__startswith="bench_"
                ).delete()
                for meter_index in range(50):
                    rows = [
                        (
                            year_tenant.pk,
                            f"bench_{meter_index:02d}",
                            first_hour + timedelta(hours=h),
                            "{}",
                            h % 97,
                        )
                        for h in range(8760)
                    ]
                    ledger.add_rows(rows, "sum")
        with context.tenant_context(year_tenant):
            from django.db import connection

            from billing.models import Meter

            year_owner = User.objects.get(email=f"owner@{year_tenant.slug}.test")
            with context.public_context():
                existing = set(
                    Meter.objects.filter(tenant_id=year_tenant.pk).values_list("slug", flat=True)
                )
            for m in range(50):
                if f"bench_{m:02d}" not in existing:
                    services.meter_create(
                        actor=Actor.for_user(year_owner),
                        slug=f"bench_{m:02d}",
                        name=f"Bench {m}",
                        event_type=f"bench.{m}",
                        aggregation="SUM",
                        value_path="v",
                    )

            with connection.cursor() as cursor:
                cursor.execute("ANALYZE public.billing_usagebucket")
            one, fifty = [], []
            start_at, end_at = now - timedelta(days=365), now
            for _ in range(max(rounds, 10)):
                t0 = time.perf_counter()
                report = selectors.usage_report(
                    actor=system, meter="bench_07", start=start_at, end=end_at, granularity="day"
                )
                one.append((time.perf_counter() - t0) * 1000)
                start = time.perf_counter()
                totals = [
                    selectors.meter_total(
                        tenant=year_tenant, meter=f"bench_{m:02d}", start=start_at, end=end_at
                    )
                    for m in range(50)
                ]
                fifty.append((time.perf_counter() - start) * 1000)
            assert len(report.buckets) >= 365 and report.total and all(totals)
        results["year_query"] = {
            "rows": 50 * 8760,
            "one_meter_year_ms_per_round": one,
            "one_meter_year_ms": statistics.median(one),
            "fifty_meters_year_ms_per_round": fifty,
            "fifty_meters_year_ms": statistics.median(fifty),
        }
    return results


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument(
        "--parts",
        default=",".join(PARTS),
        help=f"comma-separated, any of {','.join(PARTS)} (default: all)",
    )
    parser.add_argument("--inner", action="store_true")
    args = parser.parse_args()
    if args.inner:
        print(json.dumps(inner(args.rounds, set(args.parts.split(",")))))
        return 0
    database = database_url("billing")
    ensure_database(database)
    # Plain HTTP in process, as behind the TLS-terminating proxy production runs with.
    env = django_env(database, SECURE_SSL_REDIRECT="0")
    done = subprocess.run(
        [PYTHON, __file__, "--inner", "--rounds", str(args.rounds), "--parts", args.parts],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        print(done.stdout[-3000:], done.stderr[-6000:], file=sys.stderr)
        return done.returncode
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    # A run of some parts keeps the other parts' last figures.
    record = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    record.update(machine=machine_facts(database), rounds=args.rounds, **figures)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps({k: v for k, v in figures.items()}, indent=2))
    return 0


if __name__ == "__main__":
    os.chdir(ROOT)
    sys.exit(main())

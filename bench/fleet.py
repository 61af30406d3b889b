"""No-op fleet migration: `manage.py migrate_fleet` beside `manage.py migrate_schemas --tenant`.

    .venv/bin/python bench/fleet.py [--orgs 1000] [--rounds 3] [--workers 2]

Both commands run over the same organizations (schemas cloned from a migrated template, with
their directory rows and recorded migration state), every schema already current, as
separate processes (process start included in both), alternating which goes first round by
round. Reports medians and the ratio; raw figures in bench/results/fleet-<orgs>.json.
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
)

ORG_PREFIX = "fleet-"
BATCH = 50


def prepare(orgs: int) -> None:
    """(Worker, inside Django.) Make `orgs` organizations and record every schema's state.

    Schemas are cloned from a migrated template (pg_dump, renamed; bench/provisioning.py's) in
    batches, and their directory rows and migration state written in bulk: what provisioning
    does for a claimed spare, without its per-organization owner, audit and password hashing,
    which would take hours here for 1,000 organizations and change nothing measured.
    """
    import django

    django.setup()
    import provisioning
    from django.utils import timezone

    from scaling import fleet
    from tenants import context, schema_pool
    from tenants.models import Domain, Plan, SchemaMigrationState, Tenant

    database = os.environ["DATABASE_URL"]
    with context.public_context():
        existing = set(
            Tenant.objects.filter(slug__startswith=ORG_PREFIX).values_list("slug", flat=True)
        )
        plan = Plan.objects.get(slug="team")
    missing = [
        slug for slug in (f"{ORG_PREFIX}{n:04d}" for n in range(orgs)) if slug not in existing
    ]
    if missing:
        dump = provisioning.template_dump(database)
    for offset in range(0, len(missing), BATCH):
        batch = missing[offset : offset + BATCH]
        script = "\n".join(
            dump.replace(provisioning.TEMPLATE_SCHEMA, "t_" + slug.replace("-", "_"))
            for slug in batch
        )
        subprocess.run(
            ["psql", "-X", "-q", "-1", "-v", "ON_ERROR_STOP=1", "-d", database],
            input=script,
            text=True,
            capture_output=True,
            check=True,
        )
        with context.public_context():
            tenants = Tenant.objects.bulk_create(
                Tenant(
                    schema_name="t_" + slug.replace("-", "_"),
                    slug=slug,
                    name=f"Fleet bench {slug}",
                    plan=plan,
                    region="us-east-1",
                )
                for slug in batch
            )
            Domain.objects.bulk_create(
                Domain(domain=tenant.host, tenant=tenant, is_primary=True) for tenant in tenants
            )
            SchemaMigrationState.objects.bulk_create(
                SchemaMigrationState(
                    shard="default",
                    schema_name=tenant.schema_name,
                    fingerprint=schema_pool.migrations_fingerprint(),
                    migrated_at=timezone.now(),
                )
                for tenant in tenants
            )
        print(f"  cloned {offset + len(batch)}/{len(missing)}", file=sys.stderr, flush=True)
    report = fleet.migrate_fleet(workers=2)  # anything not recorded yet (the public schema)
    print(f"prepared: {report.total} schemas, {len(report.migrated)} migrated now", file=sys.stderr)


def in_process(rounds: int) -> dict[str, list[float]]:
    """(Worker, inside Django.) Both commands called in one process, start-up excluded."""
    import django

    django.setup()
    from django.core.management import call_command

    from scaling import fleet
    from tenants import context, schema_pool

    schema_pool.migrations_fingerprint()
    schema_pool.shared_migrations_fingerprint()
    fleet.migrate_fleet(workers=1)  # warm: the shard map, the invalidation listener
    samples: dict[str, list[float]] = {"migrate_fleet": [], "migrate_schemas --tenant": []}
    for round_number in range(rounds):
        order = list(samples) if round_number % 2 == 0 else list(reversed(samples))
        for name in order:
            started = time.perf_counter()
            if name == "migrate_fleet":
                report = fleet.migrate_fleet(workers=1)
                assert report.skipped == report.total, report  # noqa: S101
            else:
                call_command("migrate_schemas", tenant=True, verbosity=0)
                context.reapply()
            samples[name].append(time.perf_counter() - started)
    print("INPROCESS " + json.dumps(samples), flush=True)
    return samples


def timed(command: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orgs", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--prepare", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--in-process", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.prepare:
        prepare(args.orgs)
        return
    if args.in_process:
        in_process(args.rounds)
        return
    database = database_url(f"fleet{args.orgs}")
    ensure_database(database)
    env = django_env(database)
    subprocess.run(
        [PYTHON, __file__, "--prepare", "--orgs", str(args.orgs)], cwd=ROOT, env=env, check=True
    )
    variants = {
        "migrate_fleet": [PYTHON, "manage.py", "migrate_fleet", f"--workers={args.workers}"],
        "migrate_schemas --tenant": [PYTHON, "manage.py", "migrate_schemas", "--tenant", "-v0"],
    }
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for round_number in range(args.rounds):
        order = list(variants) if round_number % 2 == 0 else list(reversed(variants))
        for name in order:
            seconds = timed(variants[name], env)
            samples[name].append(seconds)
            print(f"round {round_number + 1}: {name} {seconds:.2f} s", file=sys.stderr)
    process = subprocess.run(
        [PYTHON, __file__, "--in-process", "--rounds", str(args.rounds)],
        cwd=ROOT,
        env=env,
        check=True,
        stdout=subprocess.PIPE,
        text=True,
    )
    line = next(line for line in process.stdout.splitlines() if line.startswith("INPROCESS "))
    inside = json.loads(line.removeprefix("INPROCESS "))
    fleet_median = median(samples["migrate_fleet"])
    schemas_median = median(samples["migrate_schemas --tenant"])
    result = {
        "orgs": args.orgs,
        "rounds": args.rounds,
        "workers": args.workers,
        "samples": samples,
        "median_seconds": {"migrate_fleet": fleet_median, "migrate_schemas": schemas_median},
        "ratio": schemas_median / fleet_median,
        "in_process_samples": inside,
        "in_process_median_seconds": {name: median(values) for name, values in inside.items()},
        "in_process_ratio": median(inside["migrate_schemas --tenant"])
        / median(inside["migrate_fleet"]),
        "facts": machine_facts(database),
        "command": "bench/fleet.py " + " ".join(sys.argv[1:]),
    }
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / f"fleet-{args.orgs}.json").write_text(json.dumps(result, indent=1))
    print(
        f"{args.orgs} organizations, {args.rounds} rounds: migrate_fleet median "
        f"{fleet_median:.2f} s, migrate_schemas --tenant median {schemas_median:.2f} s, "
        f"{result['ratio']:.1f}x faster; in one process (start-up excluded): "
        f"{result['in_process_median_seconds']['migrate_fleet'] * 1000:.0f} ms against "
        f"{result['in_process_median_seconds']['migrate_schemas --tenant']:.2f} s, "
        f"{result['in_process_ratio']:.0f}x"
    )


if __name__ == "__main__":
    main()

"""No-op fleet migration: `manage.py migrate_fleet` beside `manage.py migrate_schemas --tenant`.

    .venv/bin/python bench/fleet.py [--orgs 1000] [--rounds 3] [--workers 2]

Both commands run over the same organizations (real ones, provisioned through the product's fast
path from spares cloned by bench/provisioning.py's `populate`), every schema already current, as
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


def prepare(orgs: int) -> None:
    """(Worker, inside Django.) Populate the database and record every schema's state."""
    import django

    django.setup()
    import provisioning

    from scaling import fleet

    provisioning.clean_leftovers()
    provisioning.populate(os.environ["DATABASE_URL"], orgs)
    report = fleet.migrate_fleet(workers=2)  # records anything not recorded yet
    print(f"prepared: {report.total} schemas, {len(report.migrated)} recorded now", file=sys.stderr)


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
    args = parser.parse_args()
    if args.prepare:
        prepare(args.orgs)
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
    fleet_median = median(samples["migrate_fleet"])
    schemas_median = median(samples["migrate_schemas --tenant"])
    result = {
        "orgs": args.orgs,
        "rounds": args.rounds,
        "workers": args.workers,
        "samples": samples,
        "median_seconds": {"migrate_fleet": fleet_median, "migrate_schemas": schemas_median},
        "ratio": schemas_median / fleet_median,
        "facts": machine_facts(database),
        "command": "bench/fleet.py " + " ".join(sys.argv[1:]),
    }
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / f"fleet-{args.orgs}.json").write_text(json.dumps(result, indent=1))
    print(
        f"{args.orgs} organizations, {args.rounds} rounds: migrate_fleet median "
        f"{fleet_median:.2f} s, migrate_schemas --tenant median {schemas_median:.2f} s, "
        f"{result['ratio']:.1f}x faster"
    )


if __name__ == "__main__":
    main()

"""Provisioning benchmark: time to a ready organization, spare-pool fast path beside migrate path.

One sample = `organizations.services.provision_tenant` returns, then the owner logs in on the new
host (a POST to /login/ through the full middleware stack, answered with a redirect and a session).
Each round takes one fast-path sample (a pre-migrated spare is claimed) and one migrate-path
sample (the pool is empty, so `schema_pool.build_schema` runs every migration), in alternating
order, for each password hasher. The pool is refilled (by the product's own `schema_pool.refill`)
between samples, never inside the timed region, and both sample organizations are deleted after
the round, so the number of existing organizations stays at the level being measured.

Each level (10 and 1,000 existing organizations) has its own database, created on first use and
reused afterwards; the organizations that make up a level are provisioned through the fast path
from spares cloned out of one migrated template schema (pg_dump of the template, renamed), so
they are real schemas with real tables and rows, and only the missing ones are made on a rerun.

    .venv/bin/python bench/provisioning.py [--levels 10,1000] [--rounds 20]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
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
    drop_database,
    ensure_database,
    machine_facts,
    median,
    percentile,
)

TEMPLATE_SCHEMA = "bench_template"
SPARE_PREFIX = "bench_spare_"
ORG_PREFIX = "bench-org-"
SAMPLE_PREFIX = "bench-sample-"
PASSWORD = "bench-password-correct-horse"
HASHERS = {
    # Django's default (PBKDF2-SHA256, 1,000,000 iterations in Django 5.2): what production pays.
    "pbkdf2": ["django.contrib.auth.hashers.PBKDF2PasswordHasher"],
    # Takes password hashing out of the figure, to show what provisioning itself costs.
    "md5": ["django.contrib.auth.hashers.MD5PasswordHasher"],
}
CLONE_BATCH = 25
# The worker's answer when the level's organizations were built with other migrations.
STALE_EXIT_CODE = 3


# --- worker: runs inside Django, against one level's database -------------------------------


def use_hasher(name: str) -> None:
    from django.conf import settings
    from django.contrib.auth.hashers import get_hashers, get_hashers_by_algorithm

    settings.PASSWORD_HASHERS = HASHERS[name]
    get_hashers.cache_clear()
    get_hashers_by_algorithm.cache_clear()


def sql(query: str, params: list | None = None) -> list[tuple]:
    from django.db import connection

    from tenants import context

    with context.public_context(), connection.cursor() as cursor:
        cursor.execute(query, params or [])
        return cursor.fetchall() if cursor.description else []


def template_fingerprint() -> str | None:
    rows = sql(
        "SELECT obj_description(oid, 'pg_namespace') FROM pg_namespace WHERE nspname = %s",
        [TEMPLATE_SCHEMA],
    )
    return rows[0][0] if rows else None


def ensure_template() -> None:
    """The migrated template schema, built by migrate once per set of migrations."""
    from tenants import schema_pool

    fingerprint = schema_pool.migrations_fingerprint()
    current = template_fingerprint()
    if current != fingerprint:
        if current is not None:
            schema_pool.drop_schema(TEMPLATE_SCHEMA)
        schema_pool.build_schema(TEMPLATE_SCHEMA)
        sql(f"COMMENT ON SCHEMA {TEMPLATE_SCHEMA} IS '{fingerprint}'")


def population_is_stale() -> bool:
    """Organizations built with other migrations than the code's: the database must be rebuilt."""
    from tenants import context, schema_pool
    from tenants.models import Tenant

    with context.public_context():
        populated = Tenant.objects.filter(slug__startswith=ORG_PREFIX).exists()
    return populated and template_fingerprint() != schema_pool.migrations_fingerprint()


def template_dump(database: str) -> str:
    """SQL that recreates the template schema (pg_dump, structure and rows)."""
    ensure_template()
    dump = subprocess.run(
        ["pg_dump", "--schema", TEMPLATE_SCHEMA, "--no-owner", "--no-privileges", "-d", database],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    # The fingerprint comment marks the template only; the clones must not carry it.
    return "\n".join(line for line in dump.splitlines() if not line.startswith("COMMENT ON SCHEMA"))


def clone_spares(database: str, dump: str, count: int) -> None:
    """Add `count` spares to the pool, cloned from the template in one psql transaction."""
    from tenants import context, schema_pool
    from tenants.models import SpareSchema

    names = [f"{SPARE_PREFIX}{secrets.token_hex(6)}" for _ in range(count)]
    script = "\n".join(dump.replace(TEMPLATE_SCHEMA, name) for name in names)
    subprocess.run(
        ["psql", "-X", "-q", "-1", "-v", "ON_ERROR_STOP=1", "-d", database],
        input=script,
        text=True,
        capture_output=True,
        check=True,
    )
    with context.public_context():
        SpareSchema.objects.bulk_create(
            SpareSchema(schema_name=name, fingerprint=schema_pool.migrations_fingerprint())
            for name in names
        )


def clean_leftovers() -> None:
    """Undo what an interrupted run left behind: sample organizations and unregistered clones."""
    from core.actors import Actor
    from organizations import services
    from tenants import context, schema_pool
    from tenants.models import SpareSchema, Tenant

    with context.public_context():
        for tenant in Tenant.objects.filter(slug__startswith=SAMPLE_PREFIX):
            services.tenant_delete(actor=Actor.system("bench"), tenant=tenant)
        registered = set(SpareSchema.objects.values_list("schema_name", flat=True))
        with_tenant = set(Tenant.objects.values_list("schema_name", flat=True))
    for prefix in (SPARE_PREFIX, "bench_step_", "t_" + SAMPLE_PREFIX.replace("-", "_")):
        pattern = prefix.replace("_", r"\_") + "%"
        for (name,) in sql("SELECT nspname FROM pg_namespace WHERE nspname LIKE %s", [pattern]):
            if name not in registered and name not in with_tenant:
                schema_pool.drop_schema(name)


def populate(database: str, level: int) -> float:
    """Provision organizations (fast path, cloned spares) until `level` exist. Returns seconds."""
    from core.actors import Actor
    from organizations import services
    from tenants import context
    from tenants.models import Tenant

    with context.public_context():
        existing = set(Tenant.objects.values_list("slug", flat=True))
    missing = [
        f"{ORG_PREFIX}{index:04d}"
        for index in range(level)
        if f"{ORG_PREFIX}{index:04d}" not in existing
    ][: max(0, level - len(existing))]
    if not missing:
        return 0.0
    started = time.perf_counter()
    use_hasher("md5")
    dump = template_dump(database)
    for offset in range(0, len(missing), CLONE_BATCH):
        batch = missing[offset : offset + CLONE_BATCH]
        clone_spares(database, dump, len(batch))
        for slug in batch:
            with context.public_context():
                services.provision_tenant(
                    actor=Actor.system("bench"),
                    slug=slug,
                    name=f"Bench org {slug}",
                    owner_email=f"owner@{slug}.test",
                    owner_password=PASSWORD,
                )
        print(f"  populated {offset + len(batch)}/{len(missing)}", file=sys.stderr, flush=True)
    return time.perf_counter() - started


def catalog() -> dict[str, int]:
    from tenants import context
    from tenants.models import SpareSchema, Tenant

    with context.public_context():
        tenants = Tenant.objects.count()
        spares = SpareSchema.objects.count()
    return {
        "organizations": tenants,
        "spare_schemas": spares,
        "schemas": sql("SELECT count(*) FROM pg_namespace")[0][0],
        "pg_class_rows": sql("SELECT count(*) FROM pg_class")[0][0],
    }


def sample(path: str, hasher: str, number: int) -> dict[str, float]:
    """Provision one organization through `path`, log its owner in; both timed, then verified."""
    from django.contrib.sessions.backends.db import SessionStore
    from django.test import Client

    from accounts.models import User
    from core.actors import Actor
    from organizations import services
    from tenants import context, schema_pool

    pool_before = schema_pool.size()
    assert (pool_before > 0) if path == "fast" else (pool_before == 0), (path, pool_before)
    slug = f"{SAMPLE_PREFIX}{path}-{hasher}-{number}"
    email = f"owner@{slug}.test"
    client = Client(HTTP_HOST=f"{slug}.localhost")

    started = time.perf_counter()
    with context.public_context():
        tenant = services.provision_tenant(
            actor=Actor.system("bench"),
            slug=slug,
            name=f"Bench sample {number}",
            owner_email=email,
            owner_password=PASSWORD,
        )
    provisioned = time.perf_counter()
    response = client.post("/login/", {"username": email, "password": PASSWORD})
    logged_in = time.perf_counter()

    context.activate(None)  # the middleware leaves the request's tenant context entered
    assert response.status_code == 302, response.status_code
    assert schema_pool.size() == pool_before - (1 if path == "fast" else 0)
    with context.tenant_context(tenant):
        session = SessionStore(session_key=client.cookies["sessionid"].value)
        owner = User.objects.get(email=email)
        assert session["_auth_user_id"] == str(owner.pk)
    return {
        "provision": provisioned - started,
        "login": logged_in - provisioned,
        "ready": logged_in - started,
        "tenant": tenant,
    }


def measure(level: int, rounds: int, hashers: list[str]) -> dict:
    from core.actors import Actor
    from organizations import services
    from tenants import context, schema_pool

    samples: dict[str, list[dict[str, float]]] = {
        f"{path}/{hasher}": [] for hasher in hashers for path in ("fast", "migrate")
    }
    refill_seconds: list[float] = []

    def refill() -> None:
        started = time.perf_counter()
        built = schema_pool.refill(1)
        refill_seconds.append(time.perf_counter() - started)
        assert schema_pool.size() == 1, built

    # Start every round with an empty pool, so that either path can go first.
    with context.public_context():
        from tenants.models import SpareSchema

        for spare in SpareSchema.objects.all():
            schema_pool.drop_schema(spare.schema_name)
            spare.delete()

    number = 0
    # Round -1 warms caches up (migration loader, templates, connections) and is not recorded.
    for round_number in range(-1, rounds):
        order = hashers if round_number % 2 == 0 else list(reversed(hashers))
        for hasher in order:
            use_hasher(hasher)
            number += 1
            made = []
            if (round_number + number) % 2 == 0:
                refill()
                made.append(("fast", sample("fast", hasher, number)))
                made.append(("migrate", sample("migrate", hasher, number)))
            else:
                made.append(("migrate", sample("migrate", hasher, number)))
                refill()
                made.append(("fast", sample("fast", hasher, number)))
            for path, result in made:
                with context.public_context():
                    services.tenant_delete(actor=Actor.system("bench"), tenant=result.pop("tenant"))
                if round_number >= 0:
                    samples[f"{path}/{hasher}"].append(result)
        print(f"  round {round_number + 1}/{rounds}", file=sys.stderr, flush=True)

    summary = {}
    for key, values in samples.items():
        summary[key] = {
            part: {
                "median": median([value[part] for value in values]),
                "p95": percentile([value[part] for value in values], 0.95),
                "min": min(value[part] for value in values),
                "max": max(value[part] for value in values),
            }
            for part in ("ready", "provision", "login")
        }
        summary[key]["n"] = len(values)
    return {"summary": summary, "refill_median": median(refill_seconds), "samples": samples}


def schema_steps(rounds: int) -> dict:
    """The schema step alone: claim a spare, run every migration, or django-tenants' clone."""
    from django_tenants.clone import CloneSchema

    from tenants import schema_pool

    ensure_template()
    cloner = CloneSchema()

    def claim(name: str) -> None:
        assert schema_pool.claim(name)

    def clone(name: str) -> None:
        cloner.clone_schema(TEMPLATE_SCHEMA, name)

    steps = {"claim": claim, "migrate": schema_pool.build_schema, "clone": clone}
    times: dict[str, list[float]] = {step: [] for step in steps}
    for round_number in range(-1, rounds):  # round -1 warms up (and installs clone_schema())
        order = list(steps)
        shift = round_number % len(order)
        for step in order[shift:] + order[:shift]:
            if step == "claim":
                schema_pool.refill(1)
            name = f"bench_step_{step}_{secrets.token_hex(4)}"
            started = time.perf_counter()
            steps[step](name)
            elapsed = time.perf_counter() - started
            schema_pool.drop_schema(name)
            if round_number >= 0:
                times[step].append(elapsed)
    return {
        step: {"median": median(values), "p95": percentile(values, 0.95), "n": len(values)}
        for step, values in times.items()
    }


def worker(level: int, rounds: int, hashers: list[str]) -> None:
    import django

    django.setup()
    from tenants import routing

    database = os.environ["DATABASE_URL"]
    # Start the routing invalidation listener now: its first start waits for Redis to subscribe.
    routing.lookup("bench-warmup.localhost")
    clean_leftovers()
    if population_is_stale():
        sys.exit(STALE_EXIT_CODE)
    populate_seconds = populate(database, level)
    before = catalog()
    result = measure(level, rounds, hashers)
    result["schema_steps"] = schema_steps(max(5, rounds // 2))
    print(
        "RESULT "
        + json.dumps(
            {
                "level": level,
                "populate_seconds": populate_seconds,
                "catalog": before,
                **result,
            }
        ),
        flush=True,
    )


# --- driver -----------------------------------------------------------------------------------


def run_level(level: int, rounds: int, hashers: list[str]) -> dict:
    database = database_url(f"p{level}")
    ensure_database(database)
    command = [PYTHON, __file__, "--worker", "--levels", str(level), "--rounds", str(rounds)]
    command += ["--hashers", ",".join(hashers)]
    process = subprocess.run(
        command, cwd=ROOT, env=django_env(database), stdout=subprocess.PIPE, text=True
    )
    if process.returncode == STALE_EXIT_CODE:
        print(f"level {level}: built with other migrations; rebuilding", file=sys.stderr)
        drop_database(database)
        ensure_database(database)
        process = subprocess.run(
            command, cwd=ROOT, env=django_env(database), stdout=subprocess.PIPE, text=True
        )
    process.check_returncode()
    line = next(line for line in process.stdout.splitlines() if line.startswith("RESULT "))
    result = json.loads(line.removeprefix("RESULT "))
    result["database"] = database.rsplit("/", 1)[1]
    result["facts"] = machine_facts(database)
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / f"provisioning-p{level}.json").write_text(json.dumps(result))
    return result


def report(results: list[dict], facts: dict[str, str], command: str) -> str:
    lines = [
        f"Command: `{command}`  ",
        f"Date: {facts['date']}; {facts['nproc']} CPUs, {facts['memory']}, {facts['arch']}, "
        f"PostgreSQL {facts.get('postgresql', '?')}, Python {facts['python']}",
        "",
        "| existing orgs | hasher | path | n | ready median | ready p95 | provision median "
        "| login median |",
        "| ---: | --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]

    def ms(seconds: float) -> str:
        return f"{seconds * 1000:.0f} ms"

    for result in results:
        for key, stats in result["summary"].items():
            path, hasher = key.split("/")
            lines.append(
                f"| {result['catalog']['organizations']} | {hasher} | {path} | {stats['n']} "
                f"| {ms(stats['ready']['median'])} | {ms(stats['ready']['p95'])} "
                f"| {ms(stats['provision']['median'])} | {ms(stats['login']['median'])} |"
            )
    lines += [
        "",
        "Schema step alone (no tenant row, owner or login):",
        "",
        "| existing orgs | claim a spare (rename) | migrate (`build_schema`) "
        "| django-tenants `clone_schema` |",
        "| ---: | ---: | ---: | ---: |",
    ]
    for result in results:
        steps = result["schema_steps"]
        cells = " | ".join(
            f"{ms(steps[step]['median'])} (p95 {ms(steps[step]['p95'])}, n={steps[step]['n']})"
            for step in ("claim", "migrate", "clone")
        )
        lines.append(f"| {result['catalog']['organizations']} | {cells} |")
    lines.append("")
    for result in results:
        cat = result["catalog"]
        lines.append(
            f"- level {result['level']} (database `{result['database']}`): "
            f"{cat['organizations']} organizations, {cat['schemas']} schemas, "
            f"{cat['pg_class_rows']} pg_class rows; populating took "
            f"{result['populate_seconds']:.0f} s this run; pool refill (untimed) median "
            f"{result['refill_median'] * 1000:.0f} ms"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", default="10,1000")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--hashers", default="md5,pbkdf2")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    levels = [int(level) for level in args.levels.split(",")]
    hashers = args.hashers.split(",")
    if args.worker:
        worker(levels[0], args.rounds, hashers)
        return
    results = []
    for level in levels:
        print(f"level {level}: {args.rounds} rounds, hashers {hashers}", file=sys.stderr)
        results.append(run_level(level, args.rounds, hashers))
    facts = machine_facts(database_url(f"p{levels[0]}"))
    command = "bench/provisioning.py " + " ".join(sys.argv[1:])
    text = report(results, facts, command.strip())
    print(text)


if __name__ == "__main__":
    main()

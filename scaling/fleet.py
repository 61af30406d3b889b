"""Fleet migrations: every shard's public schema and every organization's schema, in parallel.

What is current is known from one query (tenants.migration_state: the fingerprint of the
migrations each schema was last brought up to), so a run with nothing to do touches no schema.
The others are migrated by worker processes (django-tenants' per-schema migrate), each result
recorded as soon as it is known: a run that crashes or is killed resumes where it stopped, and a
schema that fails is reported (and recorded) without stopping the rest.
"""

from __future__ import annotations

import multiprocessing
import time
import traceback
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field

from django.conf import settings
from django.core.management import call_command
from django.db import connections

from tenants import context, guard, migration_state, schema_pool, shards
from tenants.models import Tenant, TenantStatus


@dataclass(frozen=True)
class Target:
    shard: str
    schema_name: str

    @property
    def is_public(self) -> bool:
        return self.schema_name == settings.PUBLIC_SCHEMA_NAME

    @property
    def fingerprint(self) -> str:
        if self.is_public:
            return schema_pool.shared_migrations_fingerprint()
        return schema_pool.migrations_fingerprint()

    def __str__(self) -> str:
        return f"{self.shard}:{self.schema_name}"


@dataclass
class Outcome:
    target: Target
    ok: bool
    seconds: float
    error: str = ""


@dataclass
class FleetReport:
    total: int = 0
    skipped: int = 0
    migrated: list[Outcome] = field(default_factory=list)
    failed: list[Outcome] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed


def targets(*, shard: str | None = None) -> list[Target]:
    """Each shard's `public` first, then every organization's schema, by shard and schema."""
    found = [Target(name, settings.PUBLIC_SCHEMA_NAME) for name in shards.all_shards()]
    with context.public_context():
        schemas = (
            Tenant.objects.exclude(status=TenantStatus.DELETING)
            .exclude(schema_name=settings.PUBLIC_SCHEMA_NAME)
            .order_by("shard", "schema_name")
            .values_list("shard", "schema_name")
        )
        found += [Target(shard_name, schema) for shard_name, schema in schemas]
    if shard is not None:
        found = [target for target in found if target.shard == shard]
    return found


def pending(all_targets: list[Target]) -> list[Target]:
    """The targets whose recorded state is not the code's: one query, whatever the fleet's size."""
    recorded = migration_state.load()
    tenant_now = schema_pool.migrations_fingerprint()
    shared_now = schema_pool.shared_migrations_fingerprint()
    return [
        target
        for target in all_targets
        if recorded.get((target.shard, target.schema_name))
        != (shared_now if target.is_public else tenant_now)
    ]


def migrate_one(target: Target) -> Outcome:
    """Migrate one schema on its shard, in this process (a worker's job)."""
    started = time.perf_counter()
    try:
        shards.alias_for(target.shard)
        with context.public_context(shard=target.shard), guard.dangerously_unguarded():
            if target.is_public:
                call_command("migrate_schemas", shared=True, interactive=False, verbosity=0)
            else:
                call_command(
                    "migrate_schemas",
                    tenant=True,
                    schema_name=target.schema_name,
                    interactive=False,
                    verbosity=0,
                )
        return Outcome(target, True, time.perf_counter() - started)
    except Exception:
        return Outcome(target, False, time.perf_counter() - started, traceback.format_exc())


def _migrate_in_worker(target: Target) -> Outcome:
    try:
        return migrate_one(target)
    finally:
        connections.close_all()


def migrate_fleet(
    *,
    workers: int = 4,
    shard: str | None = None,
    progress: Callable[[int, int, Outcome], None] | None = None,
) -> FleetReport:
    """Bring every schema (of `shard`, or of all) up to the code's migrations.

    Shards' public schemas go first (tenant migrations may depend on shared tables), then the
    organizations', `workers` at a time. `progress(done, total, outcome)` after each schema.
    """
    all_targets = targets(shard=shard)
    todo = pending(all_targets)
    report = FleetReport(total=len(all_targets), skipped=len(all_targets) - len(todo))
    publics = [target for target in todo if target.is_public]
    tenants = [target for target in todo if not target.is_public]
    done = 0
    for batch in (publics, tenants):
        if not batch:
            continue
        for outcome in _run(batch, workers):
            done += 1
            _record(outcome, report)
            if progress is not None:
                progress(done, len(todo), outcome)
        if report.failed and batch is publics:
            # An organization's schema may need a shared table its shard's public lacks.
            failed_shards = {outcome.target.shard for outcome in report.failed}
            tenants = [target for target in tenants if target.shard not in failed_shards]
    return report


def _record(outcome: Outcome, report: FleetReport) -> None:
    target = outcome.target
    if outcome.ok:
        migration_state.record(
            shard=target.shard, schema_name=target.schema_name, fingerprint=target.fingerprint
        )
        report.migrated.append(outcome)
    else:
        migration_state.record_failure(
            shard=target.shard, schema_name=target.schema_name, error=outcome.error
        )
        report.failed.append(outcome)


def _run(batch: list[Target], workers: int):
    """Yield outcomes as they complete: in this process for one worker, else in a fork pool."""
    if workers <= 1 or len(batch) == 1:
        for target in batch:
            yield migrate_one(target)
            context.reapply()
        return
    # Forked workers must not share this process's sockets: close them first; every worker is
    # forked at the first submit, before this process reconnects to record results.
    connections.close_all()
    pool = ProcessPoolExecutor(
        max_workers=min(workers, len(batch)), mp_context=multiprocessing.get_context("fork")
    )
    try:
        futures: set[Future] = set()
        queue = list(batch)
        first = queue.pop(0)
        futures.add(pool.submit(_migrate_in_worker, first))
        while queue and len(futures) < workers * 2:
            futures.add(pool.submit(_migrate_in_worker, queue.pop(0)))
        while futures:
            finished, futures = wait(futures, return_when=FIRST_COMPLETED)
            for future in finished:
                yield future.result()
            while queue and len(futures) < workers * 2:
                futures.add(pool.submit(_migrate_in_worker, queue.pop(0)))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)

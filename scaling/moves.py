"""Moving an organization's schema to another shard (manage.py move_tenant).

1. copy: `pg_dump --schema` of the source piped into `pg_restore` on the target, while the
   organization keeps working (a leftover copy from an earlier, killed attempt is dropped first);
2. pause: the directory marks its writes paused (requests get 503 + Retry-After in every process,
   through the routing invalidation), then a transaction on the source locks every table of the
   schema EXCLUSIVE (reads go on; a write that was already under way finishes first, a later one
   waits for the switch);
3. catch up and verify: per table, row count and checksum on both sides; a table that changed
   since the dump is copied again (COPY), sequences are set to the source's; then every table
   must match;
4. switch: the directory's row points at the target and the pause ends (one commit), and the
   source schema is dropped in the locking transaction, which commits last.

Any failure before the switch rolls the source transaction back, drops the copy and lifts the
pause: the organization works on its old shard. A mover killed outright leaves the same (its
transaction dies with its connection; the pause is a deadline that expires by itself; the next
attempt drops the stale copy). Killed between the switch and the drop, the organization works on
the verified copy and the old schema is left behind: `move_tenant` reports and drops such
orphans (`--drop-orphans`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import connection, connections, transaction
from django.utils import timezone

from audit import services as audit
from core.actors import Actor
from tenants import context, guard, migration_state, residency, routing, schema_pool, shards
from tenants.models import Tenant, TenantStatus

STEPS = ("copy", "pause", "verify", "switch", "drop")


class MoveFailed(Exception):
    pass


@dataclass
class MoveReport:
    tenant: str
    source: str
    target: str
    tables: int = 0
    rows: int = 0
    recopied: list[str] = field(default_factory=list)
    pause_seconds: float = 0.0
    seconds: float = 0.0


Progress = Callable[[str, str], None]


def _connection_env(alias: str) -> dict[str, str]:
    """libpq variables for a shard: the password never goes on a command line."""
    config = connections.settings[shards.alias_for(alias)]
    env = {
        "PGDATABASE": config["NAME"],
        "PGHOST": config.get("HOST") or "127.0.0.1",
        "PGPORT": str(config.get("PORT") or 5432),
        "PGUSER": config.get("USER") or "postgres",
    }
    if config.get("PASSWORD"):
        env["PGPASSWORD"] = config["PASSWORD"]
    return {**os.environ, **env}


def _copy_schema(schema_name: str, source: str, target: str) -> None:
    # PostgreSQL's own client tools, from PATH; the arguments are a validated schema name.
    dump = subprocess.Popen(  # noqa: S603
        [
            shutil.which("pg_dump") or "pg_dump",
            "--format=custom",
            f"--schema={schema_name}",
            "--no-owner",
        ],
        env=_connection_env(source),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    restore = subprocess.run(  # noqa: S603
        [
            shutil.which("pg_restore") or "pg_restore",
            "--no-owner",
            "--single-transaction",
            "--exit-on-error",
            "--dbname=",
        ],
        env=_connection_env(target),
        stdin=dump.stdout,
        capture_output=True,
        check=False,
    )
    dump.stdout.close()
    dump_errors = dump.stderr.read().decode(errors="replace")
    if dump.wait() != 0 or restore.returncode != 0:
        raise MoveFailed(
            f"copying {schema_name}: {dump_errors.strip()} {restore.stderr.decode().strip()}"[:2000]
        )


def _tables(cursor, schema_name: str) -> list[str]:
    cursor.execute(
        "SELECT tablename FROM pg_tables WHERE schemaname = %s ORDER BY tablename", [schema_name]
    )
    return [name for (name,) in cursor.fetchall()]


def _sequences(cursor, schema_name: str) -> list[str]:
    cursor.execute(
        "SELECT sequencename FROM pg_sequences WHERE schemaname = %s ORDER BY 1", [schema_name]
    )
    return [name for (name,) in cursor.fetchall()]


def _fingerprint(cursor, schema_name: str, table: str) -> tuple[int, str]:
    """(row count, checksum of every row's text) of one table."""
    qualified = f"{connection.ops.quote_name(schema_name)}.{connection.ops.quote_name(table)}"
    cursor.execute(
        f"SELECT count(*), coalesce(md5(string_agg(h, '' ORDER BY h)), '') "  # noqa: S608
        f"FROM (SELECT md5(t::text) AS h FROM {qualified} t) rows"
    )
    count, digest = cursor.fetchone()
    return count, digest


def _exists(alias: str, schema_name: str) -> bool:
    with context.public_context(shard=alias), connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", [schema_name])
        return cursor.fetchone() is not None


def _set_pause(tenant: Tenant, until) -> None:
    with context.public_context(), transaction.atomic():
        Tenant.objects.filter(pk=tenant.pk).update(writes_paused_until=until)
    routing.clear_everywhere()


def tenant_move(
    *, actor: Actor, slug: str, to: str, progress: Progress | None = None
) -> MoveReport:
    """Move organization `slug`'s schema to shard `to` (see the module's docstring)."""
    audit.require_staff(actor, "organization.moved", "organization", slug)
    say = progress or (lambda step, message: None)
    with context.public_context():
        tenant = Tenant.objects.filter(slug=slug).exclude(status=TenantStatus.DELETING).first()
    if tenant is None:
        raise ValidationError({"slug": [f"No organization “{slug}”."]})
    try:
        target = shards.get(to)
    except shards.UnknownShard:
        raise ValidationError({"to": [f"No shard “{to}”. See manage.py shard_list."]}) from None
    source = tenant.shard
    if target.name == source:
        raise ValidationError({"to": [f"{slug} is already on {to}."]})
    # The one placement check: a refusal is recorded in both logs and raised.
    residency.check_placement(
        actor=actor,
        tenant=tenant,
        region=target.region_for(tenant.region),
        purpose=residency.Purpose.MOVE,
        subject=target.name,
    )
    schema = tenant.schema_name
    report = MoveReport(tenant=slug, source=source, target=target.name)
    details = {"slug": slug, "from": source, "to": target.name}
    with context.public_context(), transaction.atomic():
        audit.record_in_both_logs(
            actor=actor,
            tenant=tenant,
            action="organization.move_started",
            resource_type="organization",
            resource_id=str(tenant.public_id),
            details=details,
        )
    started = time.perf_counter()
    shards.alias_for(target.name)
    try:
        # 1. copy, while the organization keeps working.
        if _exists(target.name, schema):
            say("copy", f"dropping a stale copy of {schema} on {target.name}")
            schema_pool.drop_schema(schema, shard=target.name)
        say("copy", f"pg_dump --schema={schema} from {source} into {target.name}")
        _copy_schema(schema, source, target.name)

        # 2. pause writes: every process answers 503, then lock the tables on the source.
        pause_started = time.perf_counter()
        _set_pause(tenant, timezone.now() + timedelta(seconds=settings.MOVE_PAUSE_MAX_SECONDS))
        say("pause", "writes paused")
        report = _switch(
            tenant=tenant, schema=schema, source=source, target=target.name, report=report, say=say
        )
        report.pause_seconds = time.perf_counter() - pause_started
    except Exception as error:
        if not _switched(tenant, target.name):
            say("failed", f"{type(error).__name__}: {error}; {slug} stays on {source}")
            _undo(tenant, schema, target.name)
            with context.public_context(), transaction.atomic():
                audit.record_in_both_logs(
                    actor=actor,
                    tenant=tenant,
                    action="organization.move_failed",
                    resource_type="organization",
                    resource_id=str(tenant.public_id),
                    details={**details, "error": f"{type(error).__name__}"[:200]},
                )
        raise
    report.seconds = time.perf_counter() - started
    tenant.shard = target.name
    with context.public_context(), transaction.atomic():
        audit.record_in_both_logs(
            actor=actor,
            tenant=tenant,
            action="organization.moved",
            resource_type="organization",
            resource_id=str(tenant.public_id),
            details={
                **details,
                "tables": report.tables,
                "rows": report.rows,
                "recopied": report.recopied,
                "pause_ms": round(report.pause_seconds * 1000),
            },
        )
    say("done", f"{slug} is on {target.name} (paused {report.pause_seconds * 1000:.0f} ms)")
    return report


def _switch(*, tenant, schema, source, target, report, say) -> MoveReport:
    """Steps 2-4 under the source's table locks; returns after the old copy is dropped."""
    with guard.dangerously_unguarded():
        # The copy changes no more: its checksums are taken before the pause.
        with context.public_context(shard=target), connection.cursor() as dst:
            copied = {table: _fingerprint(dst, schema, table) for table in _tables(dst, schema)}
        with (
            context.public_context(shard=source),
            transaction.atomic(),
            connection.cursor() as src,
        ):
            tables = _tables(src, schema)
            for table in tables:
                src.execute(
                    f"LOCK TABLE {connection.ops.quote_name(schema)}."
                    f"{connection.ops.quote_name(table)} IN EXCLUSIVE MODE"
                )
            say("pause", f"{len(tables)} tables locked on {source}")
            source_prints = {table: _fingerprint(src, schema, table) for table in tables}
            with (
                context.public_context(shard=target),
                transaction.atomic(),
                connection.cursor() as dst,
            ):
                if sorted(copied) != tables:
                    raise MoveFailed(f"tables differ: {tables} / {sorted(copied)}")
                # Tables written since the dump are copied again, under the lock.
                for table in tables:
                    if copied[table] != source_prints[table]:
                        _recopy(src, dst, schema, table)
                        report.recopied.append(table)
                for sequence in _sequences(src, schema):
                    name = (
                        f"{connection.ops.quote_name(schema)}.{connection.ops.quote_name(sequence)}"
                    )
                    src.execute(f"SELECT last_value, is_called FROM {name}")  # noqa: S608
                    last_value, is_called = src.fetchone()
                    dst.execute("SELECT setval(%s, %s, %s)", [name, last_value, is_called])
                for table in report.recopied:
                    if _fingerprint(dst, schema, table) != source_prints[table]:
                        raise MoveFailed(f"{table} differs after the copy")
            # The copy is committed and matches the locked source table by table.
            report.tables = len(tables)
            report.rows = sum(count for count, _ in source_prints.values())
            say(
                "verify",
                f"{report.tables} tables, {report.rows} rows: counts and checksums match",
            )
            # 4. switch: the directory points at the copy and the pause ends, in one commit.
            with context.public_context(), transaction.atomic():
                Tenant.objects.filter(pk=tenant.pk).update(shard=target, writes_paused_until=None)
                migration_state.forget(shard=source, schema_name=schema)
                migration_state.record(
                    shard=target,
                    schema_name=schema,
                    fingerprint=schema_pool.migrations_fingerprint(),
                )
            routing.clear_everywhere()
            say("switch", f"{tenant.slug} now routes to {target}")
            src.execute("SET CONSTRAINTS ALL IMMEDIATE")
            src.execute(f"DROP SCHEMA {connection.ops.quote_name(schema)} CASCADE")
        say("drop", f"old copy dropped from {source}")
    return report


def _recopy(src, dst, schema: str, table: str) -> None:
    """Replace the copy of one table with the source's rows (triggers off on the copy: the
    audit log's own refuse TRUNCATE)."""
    qualified = f"{connection.ops.quote_name(schema)}.{connection.ops.quote_name(table)}"
    dst.execute("SET LOCAL session_replication_role = replica")
    dst.execute(f"TRUNCATE {qualified}")
    src_raw = src.cursor if hasattr(src, "cursor") else src
    dst_raw = dst.cursor if hasattr(dst, "cursor") else dst
    with (
        src_raw.copy(f"COPY {qualified} TO STDOUT (FORMAT binary)") as out,
        dst_raw.copy(f"COPY {qualified} FROM STDIN (FORMAT binary)") as into,
    ):
        for chunk in out:
            into.write(chunk)
    dst.execute("SET LOCAL session_replication_role = origin")


def _switched(tenant: Tenant, target: str) -> bool:
    with context.public_context():
        return Tenant.objects.filter(pk=tenant.pk, shard=target).exists()


def _undo(tenant: Tenant, schema: str, target: str) -> None:
    """Before the switch: drop the copy, lift the pause. The source was never touched."""
    try:
        context.activate(None)
        if _exists(target, schema):
            schema_pool.drop_schema(schema, shard=target)
    finally:
        _set_pause(tenant, None)

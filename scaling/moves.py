"""Moving an organization's schema to another shard (manage.py move_tenant).

1. copy: statement triggers on every table of the schema start recording which tables change
   (agentplane_moves.changes on the source); then `pg_dump --schema` of the source is restored on
   the target (without those triggers), while the organization keeps working (a leftover copy
   from an earlier, killed attempt is dropped first). Every table's row count and checksum are
   compared on both sides, still without pausing: a table that differs must be one the triggers
   recorded;
2. pause: the directory marks its writes paused (requests get 503 + Retry-After in every process,
   through the routing invalidation), then a transaction on the source locks every table of the
   schema EXCLUSIVE (reads go on; a write that was already under way finishes first, a later one
   waits for the switch);
3. catch up and verify: each table the triggers recorded is checksummed again on the source and,
   if it differs from the copy, copied again (COPY) and verified; sequences are set to the
   source's; every table's row count must match. The pause grows with the tables written during
   the move, not with the organization's size;
4. switch: the directory's row points at the target and the pause ends (one commit), and the
   source schema (with its triggers) is dropped in the locking transaction, which commits last.

Any failure before the switch rolls the source transaction back, drops the copy, removes the
triggers and lifts the pause: the organization works on its old shard. A mover killed outright
leaves the same (its transaction dies with its connection; the pause is a deadline that expires
by itself; the next attempt drops the stale copy and replaces the triggers). Killed between the
switch and the drop (only when the source is not `default`, where both are one commit), the
organization works on the verified copy and the old schema is left behind, routed to by nothing
(`manage.py shard_cleanup` finds and drops it, and a killed mover's triggers).

One move per organization at a time: a move holds a session advisory lock on the directory's
connection (`move_lock`), released when it ends or its connection dies; `shard_cleanup` skips an
organization whose lock is taken.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import connection, connections, transaction
from django.utils import timezone

from audit import services as audit
from core.actors import Actor
from tenants import context, guard, migration_state, residency, routing, schema_pool, shards
from tenants.models import Tenant, TenantStatus

STEPS = ("copy", "check", "pause", "verify", "switch", "drop")
# A move records which tables changed since its dump in agentplane_moves.changes on the source
# shard, through statement triggers of this name on the moving schema's tables.
TRIGGER_NAME = "agentplane_move_changes"
MOVE_LOCK_CLASS = 0x4D4F5645  # "MOVE": pg_try_advisory_lock(MOVE_LOCK_CLASS, tenant id)


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
    """pg_dump the schema from `source`, pg_restore it on `target` (without our move triggers)."""
    pg_dump = shutil.which("pg_dump") or "pg_dump"
    pg_restore = shutil.which("pg_restore") or "pg_restore"
    with tempfile.TemporaryDirectory(prefix="move-") as work:
        dump_path, list_path = Path(work) / "schema.dump", Path(work) / "restore.list"
        # PostgreSQL's own client tools; the arguments are a validated schema name and paths.
        steps = [
            (
                [
                    pg_dump,
                    "--format=custom",
                    f"--schema={schema_name}",
                    "--no-owner",
                    f"--file={dump_path}",
                ],
                source,
            ),
        ]
        for command, alias in steps:
            done = subprocess.run(  # noqa: S603
                command, env=_connection_env(alias), capture_output=True, check=False
            )
            if done.returncode != 0:
                raise MoveFailed(f"pg_dump {schema_name}: {done.stderr.decode().strip()}"[:2000])
        listing = subprocess.run(  # noqa: S603
            [pg_restore, "--list", str(dump_path)], capture_output=True, check=True, text=True
        ).stdout
        list_path.write_text(
            "\n".join(line for line in listing.splitlines() if TRIGGER_NAME not in line)
        )
        done = subprocess.run(  # noqa: S603
            [
                pg_restore,
                "--no-owner",
                "--single-transaction",
                "--exit-on-error",
                f"--use-list={list_path}",
                "--dbname=",
                str(dump_path),
            ],
            env=_connection_env(target),
            capture_output=True,
            check=False,
        )
        if done.returncode != 0:
            raise MoveFailed(f"pg_restore {schema_name}: {done.stderr.decode().strip()}"[:2000])


def _track_changes(schema_name: str, source: str) -> None:
    """Record, from now on, which of the schema's tables any statement changes (a statement
    trigger per table into `agentplane_moves.changes` on the source). Installed before the dump,
    so every change the dump may miss is recorded.

    Autocommit, one statement at a time: each CREATE TRIGGER locks one table briefly. Taking them
    all in one transaction would deadlock with a writer touching two of the tables.
    """
    with context.public_context(shard=source), connection.cursor() as cursor:
        cursor.execute("CREATE SCHEMA IF NOT EXISTS agentplane_moves")
        cursor.execute(
            "CREATE TABLE IF NOT EXISTS agentplane_moves.changes (schema_name text, "
            "table_name text, PRIMARY KEY (schema_name, table_name))"
        )
        cursor.execute(
            "CREATE OR REPLACE FUNCTION agentplane_moves.mark() RETURNS trigger "
            "LANGUAGE plpgsql AS $$ BEGIN "
            "INSERT INTO agentplane_moves.changes VALUES (TG_TABLE_SCHEMA, TG_TABLE_NAME) "
            "ON CONFLICT DO NOTHING; RETURN NULL; END $$"
        )
        cursor.execute("DELETE FROM agentplane_moves.changes WHERE schema_name = %s", [schema_name])
        for table in _tables(cursor, schema_name):
            cursor.execute(
                f"CREATE OR REPLACE TRIGGER {TRIGGER_NAME} AFTER INSERT OR UPDATE OR DELETE OR "
                f"TRUNCATE ON {_qualified(schema_name, table)} FOR EACH STATEMENT "
                "EXECUTE FUNCTION agentplane_moves.mark()"
            )


def _untrack_changes(schema_name: str, source: str) -> None:
    with context.public_context(shard=source), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", [schema_name])
        if cursor.fetchone() is None:
            return
        for table in _tables(cursor, schema_name):
            cursor.execute(
                f"DROP TRIGGER IF EXISTS {TRIGGER_NAME} ON {_qualified(schema_name, table)}"
            )
        cursor.execute("SELECT to_regclass(%s)", ["agentplane_moves.changes"])
        if cursor.fetchone()[0] is not None:
            cursor.execute(
                "DELETE FROM agentplane_moves.changes WHERE schema_name = %s", [schema_name]
            )


def _changed_tables(cursor, schema_name: str) -> set[str]:
    cursor.execute(
        "SELECT table_name FROM agentplane_moves.changes WHERE schema_name = %s", [schema_name]
    )
    return {name for (name,) in cursor.fetchall()}


def _qualified(schema_name: str, table: str) -> str:
    return f"{connection.ops.quote_name(schema_name)}.{connection.ops.quote_name(table)}"


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
    """(row count, checksum of every row's text) of one table.

    The checksum is the sum of the first 64 bits of each row's md5: independent of row order, so
    no sort (this runs while the organization's writes are paused).
    """
    qualified = _qualified(schema_name, table)
    row_hash = "('x' || substr(md5(t::text), 1, 16))::bit(64)::bigint"
    # `qualified` is quoted identifiers from the catalog, never user input.
    query = f"SELECT count(*), coalesce(sum({row_hash}), 0)::text FROM {qualified} t"  # noqa: S608  # nosec B608
    cursor.execute(query)
    count, digest = cursor.fetchone()
    return count, digest


def _exists(alias: str, schema_name: str) -> bool:
    with context.public_context(shard=alias), connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", [schema_name])
        return cursor.fetchone() is not None


def move_lock(tenant: Tenant) -> bool:
    """Take the organization's move lock (a session lock: a killed mover's dies with it)."""
    with guard.dangerously_unguarded(), context.directory_cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s, %s)", [MOVE_LOCK_CLASS, tenant.pk])
        return bool(cursor.fetchone()[0])


def move_unlock(tenant: Tenant) -> None:
    with guard.dangerously_unguarded(), context.directory_cursor() as cursor:
        cursor.execute("SELECT pg_advisory_unlock(%s, %s)", [MOVE_LOCK_CLASS, tenant.pk])


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
    if not move_lock(tenant):
        raise ValidationError({"slug": [f"{slug} is being moved already."]})
    try:
        return _move(actor=actor, tenant=tenant, target=target, say=say)
    finally:
        move_unlock(tenant)


def _move(*, actor: Actor, tenant: Tenant, target: shards.ShardInfo, say: Progress) -> MoveReport:
    slug, source = tenant.slug, tenant.shard
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
        _track_changes(schema, source)
        say("copy", f"pg_dump --schema={schema} from {source} into {target.name}")
        _copy_schema(schema, source, target.name)
        # Verify every table now, outside the pause; a table changed since (recorded by the
        # triggers) is copied again and verified under the pause.
        prints = _verify_unpaused(schema, source, target.name)
        say("check", f"{len(prints)} tables: counts and checksums match, before the pause")

        # 2. pause writes: every process answers 503, then lock the tables on the source.
        pause_started = time.perf_counter()
        _set_pause(tenant, timezone.now() + timedelta(seconds=settings.MOVE_PAUSE_MAX_SECONDS))
        say("pause", "writes paused")
        report = _switch(
            tenant=tenant,
            schema=schema,
            source=source,
            target=target.name,
            prints=prints,
            report=report,
            say=say,
            pause_started=pause_started,
        )
    except Exception as error:
        if not _switched(tenant, target.name):
            say("failed", f"{type(error).__name__}: {error}; {slug} stays on {source}")
            _undo(tenant, schema, source, target.name)
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


def _verify_unpaused(schema: str, source: str, target: str) -> dict[str, tuple[int, str]]:
    """Counts and checksums of every table on both sides, while writes go on. A table that
    differs must be one the triggers recorded (changed since the dump); one that differs and was
    not recorded means the copy is wrong."""
    with guard.dangerously_unguarded():
        with context.public_context(shard=target), connection.cursor() as dst:
            copied = {table: _fingerprint(dst, schema, table) for table in _tables(dst, schema)}
        with context.public_context(shard=source), connection.cursor() as src:
            tables = _tables(src, schema)
            originals = {table: _fingerprint(src, schema, table) for table in tables}
            changed = _changed_tables(src, schema)
    if sorted(copied) != tables:
        raise MoveFailed(f"tables differ: {tables} / {sorted(copied)}")
    wrong = [t for t in tables if copied[t] != originals[t] and t not in changed]
    if wrong:
        raise MoveFailed(f"the copy differs from the source in {', '.join(wrong)}")
    return copied


def _switch(*, tenant, schema, source, target, prints, report, say, pause_started) -> MoveReport:
    """Steps 2-4 under the source's table locks; returns after the old copy is dropped."""
    with guard.dangerously_unguarded():
        with (
            context.public_context(shard=source),
            transaction.atomic(),
            connection.cursor() as src,
        ):
            tables = sorted(prints)
            for table in tables:
                src.execute(f"LOCK TABLE {_qualified(schema, table)} IN EXCLUSIVE MODE")
            say("pause", f"{len(tables)} tables locked on {source}")
            changed = _changed_tables(src, schema)
            counts = {}
            for table in tables:
                src.execute(f"SELECT count(*) FROM {_qualified(schema, table)}")  # noqa: S608  # nosec B608
                counts[table] = src.fetchone()[0]
            with (
                context.public_context(shard=target),
                transaction.atomic(),
                connection.cursor() as dst,
            ):
                # Tables written since the dump (recorded by the triggers) are copied again.
                for table in sorted(changed):
                    expected = _fingerprint(src, schema, table)
                    if prints[table] != expected:
                        _recopy(src, dst, schema, table)
                        report.recopied.append(table)
                        if _fingerprint(dst, schema, table) != expected:
                            raise MoveFailed(f"{table} differs after the copy")
                        prints[table] = expected
                for sequence in _sequences(src, schema):
                    name = _qualified(schema, sequence)
                    src.execute(f"SELECT last_value, is_called FROM {name}")  # noqa: S608  # nosec B608
                    last_value, is_called = src.fetchone()
                    dst.execute("SELECT setval(%s, %s, %s)", [name, last_value, is_called])
                for table in tables:
                    if counts[table] != prints[table][0]:
                        raise MoveFailed(f"{table}: {counts[table]} rows, copy {prints[table][0]}")
            # The copy is committed and matches the locked source table by table.
            report.tables = len(tables)
            report.rows = sum(counts.values())
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
            # What clients see as 503: from the pause to the switch (the drop comes after).
            report.pause_seconds = time.perf_counter() - pause_started
            say("switch", f"{tenant.slug} now routes to {target}")
            src.execute("SET CONSTRAINTS ALL IMMEDIATE")
            src.execute(f"DROP SCHEMA {connection.ops.quote_name(schema)} CASCADE")
            src.execute("DELETE FROM agentplane_moves.changes WHERE schema_name = %s", [schema])
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


def _undo(tenant: Tenant, schema: str, source: str, target: str) -> None:
    """Before the switch: drop the copy, the triggers, lift the pause. No data was touched."""
    try:
        context.activate(None)
        if _exists(target, schema):
            schema_pool.drop_schema(schema, shard=target)
        _untrack_changes(schema, source)
    finally:
        _set_pause(tenant, None)

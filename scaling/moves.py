"""Moving an organization's schema to another shard (manage.py move_tenant).

1. copy: row triggers on every table of the schema start logging each changed row's primary
   key (table, key) into a per-move log on the source, `agentplane_moves."<schema>"` (an
   unlogged table, with its trigger function of the same name, outside the copied schema); a
   TRUNCATE, or any change to a table without a one-column primary key, logs the table alone
   (re-copied whole). Then `pg_dump --schema` of the source is restored on the target (without
   those triggers), while the organization keeps working (a leftover copy from an earlier,
   killed attempt is dropped first);
2. catch-up: without pausing, the logged changes are applied to the copy in rounds: each round
   takes the log's committed entries (DELETE ... RETURNING), re-reads those rows from the source
   by primary key and replaces them on the copy (delete, then COPY in; a row gone from the
   source is gone from the copy), until a round is small. Idempotent: a change logged before the
   dump's snapshot is applied again, harmlessly;
3. check: every table's row count and checksum, source (one REPEATABLE READ snapshot, with the
   log's pending keys) and copy, without the rows whose changes are still pending: they must
   match exactly. Then more catch-up rounds, each followed by the same check of the rows it
   applied (those without a change pending since);
4. pause: the directory marks its writes paused (requests get 503 + Retry-After in every process,
   through the routing invalidation), then a transaction on the source locks every table of the
   schema EXCLUSIVE (reads go on; a write that was already under way finishes first, a later one
   waits for the switch);
5. verify: the last delta is applied; the rows applied since the check and not verified yet
   (changed again during the last round, or in the last delta) are counted and checksummed on
   both sides (the rest matched at the check or after a round, and has not changed since), a
   table re-copied whole is verified whole; sequences are set to the source's. The pause grows
   with the rows written during the last round, not with the size of the tables;
6. switch: the directory's row points at the target and the pause ends (one commit), and the
   source schema (with its triggers) and the move's log are dropped in the locking transaction,
   which commits last.

Any failure before the switch rolls the source transaction back, drops the copy, removes the
triggers and the log and lifts the pause: the organization works on its old shard. A mover
killed outright leaves the same (its transaction dies with its connection; the pause is a
deadline that expires by itself; the next attempt drops the stale copy and replaces the triggers
and the log), except that its triggers keep logging every write until then (`manage.py
shard_cleanup` removes them). Killed between the switch and the drop (only when the source is
not `default`, where both are one commit), the organization works on the verified copy and the
old schema is left behind, routed to by nothing (`shard_cleanup` finds and drops it, with its
log).

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

STEPS = ("copy", "catch-up", "check", "pause", "verify", "switch", "drop")
# A move logs the keys of the rows changed since its dump in agentplane_moves."<schema>" on the
# source shard, through triggers of these names on the moving schema's tables (row triggers for
# INSERT, UPDATE and DELETE; a statement trigger for TRUNCATE).
TRIGGER_NAME = "agentplane_move_changes"
TRUNCATE_TRIGGER_NAME = "agentplane_move_changes_truncate"
TRIGGER_NAMES = (TRIGGER_NAME, TRUNCATE_TRIGGER_NAME)
LOG_SCHEMA = "agentplane_moves"
# Catch-up rounds end when one applies at most this many changed rows (then the pause applies
# what was written during that round), or after this many rounds.
CATCH_UP_SMALL_ROUND = 1000
CATCH_UP_MAX_ROUNDS = 12
KEYS_PER_BATCH = 5000
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
    rounds: int = 0  # catch-up rounds before the pause
    changes: int = 0  # changed rows applied from the log, the pause's last delta included
    paused_changes: int = 0  # of which applied under the pause
    pause_seconds: float = 0.0
    pause_steps: dict[str, float] = field(default_factory=dict)  # the pause, part by part
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


def log_table(schema_name: str) -> str:
    """The move's change log (and its trigger function, of the same name) on the source."""
    return f"{LOG_SCHEMA}.{connection.ops.quote_name(schema_name)}"


def primary_key(cursor, schema_name: str, table: str) -> tuple[str, str] | None:
    """(column, type) of the table's primary key when it is one column, else None."""
    cursor.execute(
        "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_index i "
        "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) "
        "WHERE i.indrelid = %s::regclass AND i.indisprimary",
        [_qualified(schema_name, table)],
    )
    found = cursor.fetchall()
    return (found[0][0], found[0][1]) if len(found) == 1 else None


def _track_changes(schema_name: str, source: str) -> dict[str, tuple[str, str] | None]:
    """Log, from now on, the primary key of every row of the schema any statement changes (a
    row trigger per table into `agentplane_moves."<schema>"` on the source; a TRUNCATE, or any
    change to a table without a one-column key, logs the table with a NULL key). Installed before
    the dump, so every change the dump may miss is logged. Returns each table's key.

    Autocommit, one statement at a time: each CREATE TRIGGER locks one table briefly. Taking them
    all in one transaction would deadlock with a writer touching two of the tables.
    """
    log = log_table(schema_name)
    with context.public_context(shard=source), connection.cursor() as cursor:
        cursor.execute(f"CREATE SCHEMA IF NOT EXISTS {LOG_SCHEMA}")
        # Unlogged: no WAL for the log's rows (a crash of the server ends the move anyway).
        cursor.execute(
            f"CREATE UNLOGGED TABLE IF NOT EXISTS {log} (table_name text NOT NULL, key text)"
        )
        # A killed attempt's triggers may still be writing into it: emptied, not dropped.
        cursor.execute(f"TRUNCATE {log}")
        # plpgsql reads NEW.id directly (every Django table's key); another key through jsonb.
        cursor.execute(
            f"CREATE OR REPLACE FUNCTION {log}() RETURNS trigger LANGUAGE plpgsql AS $$ "  # noqa: S608  # nosec B608
            "DECLARE new_key text; old_key text; BEGIN "
            "IF TG_LEVEL = 'STATEMENT' OR TG_NARGS = 0 THEN "
            f"INSERT INTO {log} VALUES (TG_TABLE_NAME, NULL); RETURN NULL; END IF; "
            "IF TG_ARGV[0] = 'id' THEN "
            "IF TG_OP <> 'DELETE' THEN new_key := NEW.id::text; END IF; "
            "IF TG_OP <> 'INSERT' THEN old_key := OLD.id::text; END IF; "
            "ELSE "
            "IF TG_OP <> 'DELETE' THEN new_key := to_jsonb(NEW) ->> TG_ARGV[0]; END IF; "
            "IF TG_OP <> 'INSERT' THEN old_key := to_jsonb(OLD) ->> TG_ARGV[0]; END IF; "
            "END IF; "
            f"IF new_key IS NOT NULL THEN INSERT INTO {log} VALUES (TG_TABLE_NAME, new_key); "
            "END IF; "
            "IF old_key IS NOT NULL AND old_key IS DISTINCT FROM new_key THEN "
            f"INSERT INTO {log} VALUES (TG_TABLE_NAME, old_key); END IF; "
            "RETURN NULL; END $$"
        )
        keys = {}
        for table in _tables(cursor, schema_name):
            qualified = _qualified(schema_name, table)
            keys[table] = key = primary_key(cursor, schema_name, table)
            if key is None:
                cursor.execute(
                    f"CREATE OR REPLACE TRIGGER {TRIGGER_NAME} AFTER INSERT OR UPDATE OR DELETE "
                    f"OR TRUNCATE ON {qualified} FOR EACH STATEMENT EXECUTE FUNCTION {log}()"
                )
                cursor.execute(f"DROP TRIGGER IF EXISTS {TRUNCATE_TRIGGER_NAME} ON {qualified}")
                continue
            cursor.execute(
                f"CREATE OR REPLACE TRIGGER {TRIGGER_NAME} AFTER INSERT OR UPDATE OR DELETE "
                f"ON {qualified} FOR EACH ROW EXECUTE FUNCTION {log}({_literal(key[0])})"
            )
            cursor.execute(
                f"CREATE OR REPLACE TRIGGER {TRUNCATE_TRIGGER_NAME} AFTER TRUNCATE "
                f"ON {qualified} FOR EACH STATEMENT EXECUTE FUNCTION {log}()"
            )
    return keys


def _literal(text: str) -> str:
    """A trigger argument (a column name from the catalog) as an SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def remove_change_capture(schema_name: str, alias: str, tables: list[str] | None = None) -> None:
    """Drop a move's triggers (on `tables`, or every table of the schema), then its log and
    function on `alias`. One autocommitted statement per table, as they were installed."""
    log = log_table(schema_name)
    with context.public_context(shard=alias), connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", [schema_name])
        if cursor.fetchone() is not None:
            for table in _tables(cursor, schema_name) if tables is None else sorted(set(tables)):
                for name in TRIGGER_NAMES:
                    cursor.execute(
                        f"DROP TRIGGER IF EXISTS {name} ON {_qualified(schema_name, table)}"
                    )
        cursor.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", [LOG_SCHEMA])
        if cursor.fetchone() is not None:
            cursor.execute(f"DROP FUNCTION IF EXISTS {log}()")
            cursor.execute(f"DROP TABLE IF EXISTS {log}")


@dataclass
class Delta:
    """Changed rows taken from the log: keys per table, and tables to copy whole."""

    keys: dict[str, set[str]] = field(default_factory=dict)
    whole: set[str] = field(default_factory=set)

    @property
    def size(self) -> int:
        return sum(len(keys) for keys in self.keys.values()) + len(self.whole)

    def add(self, table: str, key: str | None) -> None:
        if key is None:
            self.whole.add(table)
        else:
            self.keys.setdefault(table, set()).add(key)

    def merge(self, other: Delta) -> None:
        for table, keys in other.keys.items():
            self.keys.setdefault(table, set()).update(keys)
        self.whole |= other.whole


def _take_delta(src, schema: str) -> Delta:
    """Take the log's committed entries (in the caller's transaction on the source: rolled back
    with it, they are taken again by the next attempt)."""
    src.execute(f"DELETE FROM {log_table(schema)} RETURNING table_name, key")  # noqa: S608  # nosec B608
    delta = Delta()
    for table, key in src.fetchall():
        delta.add(table, key)
    return delta


def _pending(src, schema: str) -> Delta:
    src.execute(f"SELECT table_name, key FROM {log_table(schema)}")  # noqa: S608  # nosec B608
    delta = Delta()
    for table, key in src.fetchall():
        delta.add(table, key)
    return delta


def _columns(cursor, schema: str, table: str) -> str:
    cursor.execute(
        "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 "
        "AND NOT attisdropped AND attgenerated = '' ORDER BY attnum",
        [_qualified(schema, table)],
    )
    return ", ".join(connection.ops.quote_name(name) for (name,) in cursor.fetchall())


def _batches(keys: set[str]):
    ordered = sorted(keys)
    for start in range(0, len(ordered), KEYS_PER_BATCH):
        yield ordered[start : start + KEYS_PER_BATCH]


def _apply(src, dst, schema: str, delta: Delta, keys: dict[str, tuple[str, str] | None]) -> None:
    """Make the copy's rows of `delta` what the source's are in `src`'s snapshot (on the target's
    transaction, its triggers and foreign-key checks off, as pg_restore and the audit log's
    triggers need)."""
    for table in sorted(delta.whole | {t for t in delta.keys if keys.get(t) is None}):
        _recopy(src, dst, schema, table)
    dst.execute("SET LOCAL session_replication_role = replica")
    src_raw = src.cursor if hasattr(src, "cursor") else src
    dst_raw = dst.cursor if hasattr(dst, "cursor") else dst
    for table, changed in sorted(delta.keys.items()):
        key = keys.get(table)
        if key is None or table in delta.whole:
            continue
        qualified = _qualified(schema, table)
        columns = _columns(src, schema, table)
        match = f"{connection.ops.quote_name(key[0])} = ANY(%s::text[]::{key[1]}[])"
        # Every changed row out first, then the source's in: the table never holds two
        # versions at once (a unique column moved from one row to another would collide).
        for batch in _batches(changed):
            dst.execute(f"DELETE FROM {qualified} WHERE {match}", [batch])  # noqa: S608  # nosec B608
        for batch in _batches(changed):
            with (
                src_raw.copy(
                    f"COPY (SELECT {columns} FROM {qualified} WHERE {match}) TO STDOUT "  # noqa: S608  # nosec B608
                    "(FORMAT binary)",
                    [batch],
                ) as out,
                dst_raw.copy(f"COPY {qualified} ({columns}) FROM STDIN (FORMAT binary)") as into,
            ):
                for chunk in out:
                    into.write(chunk)
    dst.execute("SET LOCAL session_replication_role = origin")


def _catch_up_round(schema: str, source: str, target: str, keys) -> Delta:
    """One round: take the log's committed entries and apply them to the copy. The target
    commits first, then the source (its DELETE of the entries): killed between the two, the
    entries are applied again next time, harmlessly."""
    with (
        guard.dangerously_unguarded(),
        context.public_context(shard=source),
        transaction.atomic(),
        connection.cursor() as src,
    ):
        # One snapshot for the log and the rows: the copy becomes the source as of that
        # snapshot (its unique constraints hold at every step), whatever commits meanwhile.
        src.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        delta = _take_delta(src, schema)
        if delta.size:
            with (
                context.public_context(shard=target),
                transaction.atomic(),
                connection.cursor() as dst,
            ):
                _apply(src, dst, schema, delta, keys)
    return delta


def _catch_up(schema, source, target, keys, report, say, since_check: Delta | None = None):
    """Rounds until one is small (or CATCH_UP_MAX_ROUNDS). After the check (`since_check`),
    each round's rows are verified right away, so that the pause verifies only what changed
    since."""
    for _ in range(CATCH_UP_MAX_ROUNDS):
        started = time.perf_counter()
        delta = _catch_up_round(schema, source, target, keys)
        report.rounds += 1
        report.changes += delta.size
        verified = ""
        if since_check is not None:
            since_check.merge(delta)
            count = _verify_applied(schema, source, target, keys, since_check)
            verified = f", {count} verified"
        say(
            "catch-up",
            f"round {report.rounds}: {delta.size} changed rows applied "
            f"({len(delta.whole)} tables whole){verified} in "
            f"{time.perf_counter() - started:.2f} s",
        )
        if delta.size <= CATCH_UP_SMALL_ROUND:
            return


def _verify_applied(schema: str, source: str, target: str, keys, applied: Delta) -> int:
    """Count and checksum, on both sides, the rows applied since the check that have no change
    pending (read in the source's snapshot), and take them out of `applied`: they stay right
    until they change again, which logs them again. A mismatch fails the move. Returns how many
    rows were verified."""
    with guard.dangerously_unguarded():
        with context.public_context(shard=source), transaction.atomic(), connection.cursor() as src:
            src.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            pending = _pending(src, schema)
            todo = {}
            for table, changed in applied.keys.items():
                if table in applied.whole or table in pending.whole or keys.get(table) is None:
                    continue
                settled = changed - pending.keys.get(table, set())
                if settled:
                    todo[table] = (settled, _fingerprint(src, schema, table, keys[table], settled))
        with context.public_context(shard=target), connection.cursor() as dst:
            for table, (settled, expected) in sorted(todo.items()):
                if _fingerprint(dst, schema, table, keys[table], settled) != expected:
                    raise MoveFailed(f"{table}: the rows changed during the move differ")
    for table, (settled, _) in todo.items():
        applied.keys[table] -= settled
        if not applied.keys[table]:
            del applied.keys[table]
    return sum(len(settled) for settled, _ in todo.values())


def _qualified(schema_name: str, table: str) -> str:
    return f"{connection.ops.quote_name(schema_name)}.{connection.ops.quote_name(table)}"


def _tables(cursor, schema_name: str) -> list[str]:
    cursor.execute(
        "SELECT tablename FROM pg_tables WHERE schemaname = %s ORDER BY tablename", [schema_name]
    )
    return [name for (name,) in cursor.fetchall()]


def _fingerprint(
    cursor, schema_name: str, table: str, key: tuple[str, str] | None = None, only=None
) -> tuple[int, int]:
    """(row count, checksum of every row's text) of one table, or of its rows whose primary key
    `key` is in `only`.

    The checksum is the sum of the first 64 bits of each row's md5: independent of row order, so
    no sort, and a part's can be subtracted from the whole's.
    """
    qualified = _qualified(schema_name, table)
    row_hash = "('x' || substr(md5(t::text), 1, 16))::bit(64)::bigint"
    # `qualified` is quoted identifiers from the catalog, never user input.
    query = f"SELECT count(*), coalesce(sum({row_hash}), 0)::text FROM {qualified} t"  # noqa: S608  # nosec B608
    if only is None:
        cursor.execute(query)
        count, digest = cursor.fetchone()
        return count, int(digest)
    total_count, total_digest = 0, 0
    column = connection.ops.quote_name(key[0])
    for batch in _batches(set(only)):
        cursor.execute(f"{query} WHERE {column} = ANY(%s::text[]::{key[1]}[])", [batch])
        count, digest = cursor.fetchone()
        total_count, total_digest = total_count + count, total_digest + int(digest)
    return total_count, total_digest


def _laps(report: MoveReport, pause_started: float) -> Callable[[str], None]:
    """Record how long each part of the pause took (report.pause_steps, seconds)."""
    last = [pause_started]

    def lap(name: str) -> None:
        now = time.perf_counter()
        report.pause_steps[name] = round(now - last[0], 4)
        last[0] = now

    return lap


def _copy_sequences(src, dst, schema: str) -> None:
    """Set every sequence of the copy to the source's: one query on each side. A sequence never
    used on the source (NULL) is as the dump left it."""
    src.execute(
        "SELECT sequencename, last_value FROM pg_sequences WHERE schemaname = %s "
        "AND last_value IS NOT NULL ORDER BY 1",
        [schema],
    )
    found = src.fetchall()
    if found:
        calls = ", ".join("setval(%s, %s, true)" for _ in found)
        params = [value for name, last in found for value in (_qualified(schema, name), last)]
        dst.execute(f"SELECT {calls}", params)  # noqa: S608  # nosec B608


def _count(cursor, schema: str, table: str) -> int:
    cursor.execute(f"SELECT count(*) FROM {_qualified(schema, table)}")  # noqa: S608  # nosec B608
    return cursor.fetchone()[0]


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
        keys = _track_changes(schema, source)
        say("copy", f"pg_dump --schema={schema} from {source} into {target.name}")
        _copy_schema(schema, source, target.name)
        # 2. apply what was written during the copy, in rounds, still without pausing.
        _catch_up(schema, source, target.name, keys, report, say)
        # 3. every table on both sides, without the rows whose changes are pending; every row
        # applied from here on is verified again under the pause.
        tables = _check(schema, source, target.name, keys)
        say("check", f"{len(tables)} tables: counts and checksums match, before the pause")
        since_check = Delta()
        _catch_up(schema, source, target.name, keys, report, say, since_check)

        # 4. pause writes: every process answers 503, then lock the tables on the source.
        pause_started = time.perf_counter()
        _set_pause(tenant, timezone.now() + timedelta(seconds=settings.MOVE_PAUSE_MAX_SECONDS))
        say("pause", "writes paused")
        report = _switch(
            tenant=tenant,
            schema=schema,
            source=source,
            target=target.name,
            tables=tables,
            keys=keys,
            since_check=since_check,
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
                "rounds": report.rounds,
                "changes": report.changes,
                "paused_changes": report.paused_changes,
                "pause_ms": round(report.pause_seconds * 1000),
            },
        )
    say("done", f"{slug} is on {target.name} (paused {report.pause_seconds * 1000:.0f} ms)")
    return report


def _check(schema: str, source: str, target: str, keys) -> list[str]:
    """Counts and checksums of every table on both sides, while writes go on, without the rows
    whose changes are logged and not applied yet (read in the source's snapshot): the rest must
    match exactly (the copy does not change meanwhile: no round runs). A table logged to be
    copied whole, or without a one-column key, is verified whole under the pause."""
    with guard.dangerously_unguarded():
        with context.public_context(shard=source), transaction.atomic(), connection.cursor() as src:
            src.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            tables = _tables(src, schema)
            pending = _pending(src, schema)
            originals = {}
            for table in tables:
                if table in pending.whole or keys.get(table) is None:
                    continue
                except_pending = pending.keys.get(table, set())
                whole = _fingerprint(src, schema, table)
                part = _fingerprint(src, schema, table, keys[table], except_pending)
                originals[table] = (whole[0] - part[0], whole[1] - part[1])
        with context.public_context(shard=target), connection.cursor() as dst:
            if _tables(dst, schema) != tables:
                raise MoveFailed(f"tables differ: {tables} / {_tables(dst, schema)}")
            wrong = []
            for table, expected in originals.items():
                except_pending = pending.keys.get(table, set())
                whole = _fingerprint(dst, schema, table)
                part = _fingerprint(dst, schema, table, keys[table], except_pending)
                if (whole[0] - part[0], whole[1] - part[1]) != expected:
                    wrong.append(table)
    if wrong:
        raise MoveFailed(f"the copy differs from the source in {', '.join(wrong)}")
    return tables


def _switch(
    *, tenant, schema, source, target, tables, keys, since_check, report, say, pause_started
) -> MoveReport:
    """Steps 4-6 under the source's table locks; returns after the old copy is dropped."""
    with guard.dangerously_unguarded():
        with (
            context.public_context(shard=source),
            transaction.atomic(),
            connection.cursor() as src,
        ):
            lap = _laps(report, pause_started)
            lap("paused")  # the directory's row and every process's routing cache
            # One statement, the tables in the same order as one by one.
            listed = ", ".join(_qualified(schema, table) for table in tables)
            src.execute(f"LOCK TABLE {listed} IN EXCLUSIVE MODE")
            lap("locked")
            say("pause", f"{len(tables)} tables locked on {source}")
            if _tables(src, schema) != tables:
                raise MoveFailed(f"{schema}'s tables changed during the move")
            with (
                context.public_context(shard=target),
                transaction.atomic(),
                connection.cursor() as dst,
            ):
                # 5. the last delta: what was written during the last round.
                last = _take_delta(src, schema)
                _apply(src, dst, schema, last, keys)
                report.paused_changes = last.size
                report.changes += last.size
                since_check.merge(last)
                lap("last_delta")
                # Every table copied whole (or without a key) verified whole; of the others,
                # the rows applied and not verified since the check (the rest matched at the
                # check or after a round, unchanged since on both sides).
                whole = since_check.whole | {t for t in tables if keys.get(t) is None}
                for table in sorted(whole):
                    expected = _fingerprint(src, schema, table)
                    if _fingerprint(dst, schema, table) != expected:
                        _recopy(src, dst, schema, table)
                        if _fingerprint(dst, schema, table) != expected:
                            raise MoveFailed(f"{table} differs after the copy")
                    if table in since_check.whole:
                        report.recopied.append(table)
                verified = 0
                for table, changed in sorted(since_check.keys.items()):
                    if table in whole:
                        continue
                    expected = _fingerprint(src, schema, table, keys[table], changed)
                    if _fingerprint(dst, schema, table, keys[table], changed) != expected:
                        raise MoveFailed(f"{table}: the rows changed during the move differ")
                    verified += len(changed)
                lap("verified")
                _copy_sequences(src, dst, schema)
                lap("sequences")
            # The copy is committed and matches the locked source table by table.
            report.tables = len(tables)
            say(
                "verify",
                f"{report.tables} tables: {last.size} last changes applied; {verified} rows "
                f"changed since the last check and {len(whole)} tables whole match",
            )
            # 6. switch: the directory points at the copy and the pause ends, in one commit.
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
            lap("switched")
            say("switch", f"{tenant.slug} now routes to {target}")
            src.execute("SET CONSTRAINTS ALL IMMEDIATE")
            src.execute(f"DROP SCHEMA {connection.ops.quote_name(schema)} CASCADE")
            src.execute(f"DROP FUNCTION IF EXISTS {log_table(schema)}()")
            src.execute(f"DROP TABLE IF EXISTS {log_table(schema)}")
        say("drop", f"old copy dropped from {source}")
        with context.public_context(shard=target), connection.cursor() as dst:
            report.rows = sum(_count(dst, schema, table) for table in tables)
    return report


def _recopy(src, dst, schema: str, table: str) -> None:
    """Replace the copy of one table with the source's rows (triggers off on the copy: the
    audit log's own refuse TRUNCATE)."""
    qualified = f"{connection.ops.quote_name(schema)}.{connection.ops.quote_name(table)}"
    dst.execute("SET LOCAL session_replication_role = replica")
    dst.execute(f"TRUNCATE {qualified}")
    columns = _columns(src, schema, table)
    src_raw = src.cursor if hasattr(src, "cursor") else src
    dst_raw = dst.cursor if hasattr(dst, "cursor") else dst
    with (
        src_raw.copy(f"COPY {qualified} ({columns}) TO STDOUT (FORMAT binary)") as out,
        dst_raw.copy(f"COPY {qualified} ({columns}) FROM STDIN (FORMAT binary)") as into,
    ):
        for chunk in out:
            into.write(chunk)
    dst.execute("SET LOCAL session_replication_role = origin")


def _switched(tenant: Tenant, target: str) -> bool:
    with context.public_context():
        return Tenant.objects.filter(pk=tenant.pk, shard=target).exists()


def _undo(tenant: Tenant, schema: str, source: str, target: str) -> None:
    """Before the switch: drop the copy, the triggers and the log, lift the pause. No data of
    the organization's was touched."""
    try:
        context.activate(None)
        if _exists(target, schema):
            schema_pool.drop_schema(schema, shard=target)
        remove_change_capture(schema, source)
    finally:
        _set_pause(tenant, None)

"""What a killed mover leaves behind, found and removed (manage.py shard_cleanup).

- **Orphaned copies**: a schema on a shard that is the schema of an organization the directory
  maps to *another* shard, which holds that schema. Left by a mover killed between the switch and
  the drop (the old source), or before the switch (a copy on the target, which the next move
  would drop anyway). A schema the directory maps to the shard it is on is never dropped, nor one
  whose organization's mapped shard lacks it (then the directory, not the copy, needs a look),
  nor one whose organization is being moved (its move lock is taken), nor one no organization
  claims (reported only: spares are the pool's, anything else a person's).
- **Stale change capture**: a move's triggers (`agentplane_move_changes` and
  `agentplane_move_changes_truncate`) on the tables of organizations that are not being moved,
  and its log and trigger function (`agentplane_moves."<schema>"`, which such triggers keep
  filling with every write until removed). An orphaned copy's go with it.

Without `apply`, nothing changes: the report says what would be done. Each dropped copy and each
organization's removed triggers are recorded in the platform's and the organization's logs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from django.db import connection, transaction

from audit import services as audit
from core.actors import Actor
from scaling.moves import (
    LOG_SCHEMA,
    TRIGGER_NAMES,
    log_table,
    move_lock,
    move_unlock,
    remove_change_capture,
)
from tenants import context, guard, shards
from tenants.models import SpareSchema, Tenant

SYSTEM_SCHEMAS = ("public", "information_schema", "agentplane_moves")


@dataclass
class CleanupReport:
    shard: str
    orphans: list[str] = field(default_factory=list)  # dropped (or to drop)
    triggers: dict[str, int] = field(default_factory=dict)  # schema -> triggers removed (with
    # the move's log, when there is one)
    skipped: dict[str, str] = field(default_factory=dict)  # schema -> why left alone


def _schemas(alias: str) -> set[str]:
    with context.public_context(shard=alias), connection.cursor() as cursor:
        cursor.execute(
            "SELECT nspname FROM pg_namespace WHERE nspname NOT LIKE 'pg\\_%%' "
            "AND nspname <> ALL(%s)",
            [list(SYSTEM_SCHEMAS)],
        )
        return {name for (name,) in cursor.fetchall()}


def _trigger_tables(alias: str) -> dict[str, list[str]]:
    """Schema -> the table of each move trigger on it (a table once per trigger), on `alias`,
    and an empty list for a schema with only a move's log left."""
    with context.public_context(shard=alias), connection.cursor() as cursor:
        cursor.execute(
            "SELECT n.nspname, c.relname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE t.tgname = ANY(%s) "
            "ORDER BY 1, 2",
            [list(TRIGGER_NAMES)],
        )
        found: dict[str, list[str]] = {}
        for schema, table in cursor.fetchall():
            found.setdefault(schema, []).append(table)
        cursor.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relkind = 'r' UNION SELECT p.proname FROM pg_proc p "
            "JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = %s",
            [LOG_SCHEMA, LOG_SCHEMA],
        )
        for (schema,) in cursor.fetchall():
            found.setdefault(schema, [])
        return found


def _quoted(*names: str) -> str:
    return ".".join(connection.ops.quote_name(name) for name in names)


def _drop_orphan(alias: str, schema: str, tenant: Tenant) -> bool:
    """Drop `schema` on `alias` unless the directory now maps its organization there."""
    with context.public_context(), transaction.atomic():
        # Locks the directory row: a switch to this shard cannot commit meanwhile.
        current = Tenant.objects.select_for_update().get(pk=tenant.pk)
        if current.shard == alias:
            return False
        with context.public_context(shard=alias), connection.cursor() as cursor:
            cursor.execute(f"DROP SCHEMA {_quoted(schema)} CASCADE")
            cursor.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", [LOG_SCHEMA])
            if cursor.fetchone() is not None:
                cursor.execute(f"DROP FUNCTION IF EXISTS {log_table(schema)}()")
                cursor.execute(f"DROP TABLE IF EXISTS {log_table(schema)}")
    return True


def _remove_triggers(alias: str, schema: str, tables: list[str]) -> None:
    # One autocommitted statement per table, as the mover installs them (no deadlock with a
    # writer touching two tables), then the log and its function.
    remove_change_capture(schema, alias, tables)


def _record(actor: Actor, tenant: Tenant, action: str, details: dict) -> None:
    with context.public_context(), transaction.atomic():
        audit.record_in_both_logs(
            actor=actor,
            tenant=tenant,
            action=action,
            resource_type="organization",
            resource_id=str(tenant.public_id),
            details=details,
        )


def shard_cleanup(
    *,
    actor: Actor,
    apply: bool = False,
    shard: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[CleanupReport]:
    """Find (and with `apply`, remove) orphaned copies and stale triggers on every shard (or
    `shard`); see the module's docstring."""
    audit.require_staff(actor, "shard.cleaned", "shard", shard or "")
    say = progress or (lambda message: None)
    names = [shards.get(shard).name] if shard else list(shards.all_shards())
    with context.public_context():
        tenants = {tenant.schema_name: tenant for tenant in Tenant.objects.all()}
    present = {alias: _schemas(alias) for alias in shards.all_shards()}
    reports = []
    with guard.dangerously_unguarded():
        for alias in names:
            report = CleanupReport(shard=alias)
            with context.public_context(shard=alias):
                spares = set(SpareSchema.objects.values_list("schema_name", flat=True))
            for schema in sorted(present[alias]):
                tenant = tenants.get(schema)
                if tenant is None:
                    if schema not in spares:
                        report.skipped[schema] = "no organization claims it"
                    continue
                if tenant.shard == alias:
                    continue  # the organization's live schema: never dropped
                if schema not in present.get(tenant.shard, set()):
                    report.skipped[schema] = f"its organization's shard {tenant.shard} lacks it"
                    continue
                _act(report, alias, schema, tenant, apply, actor, say, orphan=True)
            for schema, tables in _trigger_tables(alias).items():
                tenant = tenants.get(schema)
                if tenant is None or schema in report.orphans:
                    continue  # an orphan's triggers go with it
                if tenant.shard != alias and (tables or schema in present[alias]):
                    continue  # on a copy that is not (yet) an orphan: not this step's
                _act(report, alias, schema, tenant, apply, actor, say, tables=tables)
            reports.append(report)
    return reports


def _act(
    report: CleanupReport,
    alias: str,
    schema: str,
    tenant: Tenant,
    apply: bool,
    actor: Actor,
    say: Callable[[str], None],
    *,
    orphan: bool = False,
    tables: list[str] | None = None,
) -> None:
    what = (
        f"orphaned copy {schema}"
        if orphan
        else f"{len(tables or [])} triggers on {schema} and its move log"
    )
    if not move_lock(tenant):
        report.skipped[schema] = f"{tenant.slug} is being moved"
        return
    try:
        if not apply:
            if orphan:
                report.orphans.append(schema)
            else:
                report.triggers[schema] = len(tables or [])
            say(f"{alias}: would remove the {what} ({tenant.slug} is on {tenant.shard})")
            return
        if orphan:
            if not _drop_orphan(alias, schema, tenant):
                report.skipped[schema] = f"{tenant.slug} was just moved to {alias}"
                return
            report.orphans.append(schema)
            _record(actor, tenant, "organization.orphan_dropped", {"shard": alias})
        else:
            _remove_triggers(alias, schema, tables or [])
            report.triggers[schema] = len(tables or [])
            _record(
                actor,
                tenant,
                "organization.move_triggers_removed",
                {"shard": alias, "tables": len(tables or [])},
            )
        say(f"{alias}: removed the {what}")
    finally:
        move_unlock(tenant)

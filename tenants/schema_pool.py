"""Pre-migrated spare schemas: the fast path to a ready organization.

Running every migration for each new schema gets slower with every migration added. Instead a
few empty schemas are migrated ahead of time; provisioning claims one by renaming it (`ALTER
SCHEMA ... RENAME`, a catalog update that takes milliseconds) and the pool is refilled in the
background. When the pool is empty, or its spares were built with other migrations than the
code's, provisioning falls back to creating and migrating the schema. See docs/adr/0002.

Every shard has its own pool, in its own public schema: each function takes the shard's name.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import sys
import threading
from functools import cache
from pathlib import Path

from django.conf import settings
from django.core.management import call_command
from django.db import connection, transaction
from django.db.migrations.loader import MigrationLoader

from tenants import context, guard
from tenants.models import SpareSchema
from tenants.shards import DEFAULT

logger = logging.getLogger(__name__)

# One refiller at a time across all processes: a session-level advisory lock.
REFILL_LOCK_KEY = 0x5A5E_5C4E
# Only `refill` creates schemas with this prefix, and only while it holds the lock.
SPARE_PREFIX = "spare_"


@cache
def migrations_fingerprint() -> str:
    """A digest of every tenant app's migrations on disk: spares built with another are stale.

    It covers each migration's source as well as its name: a migration edited in place would
    otherwise leave spares that differ from what the migrate path builds.
    """
    return _fingerprint(settings.TENANT_APPS)


@cache
def shared_migrations_fingerprint() -> str:
    """The same digest for the shared apps: what a shard's `public` schema is migrated with."""
    return _fingerprint(settings.SHARED_APPS)


@cache
def _disk_migrations() -> dict:
    return MigrationLoader(None, ignore_no_migrations=True, load=True).disk_migrations


def _fingerprint(app_names: list[str]) -> str:
    labels = {app.rsplit(".", 1)[-1] for app in app_names}
    # Dotted AppConfig paths (portal.admin_site.PlatformAdminConfig) name their app's label.
    labels |= {"admin"} if any(app.endswith("AdminConfig") for app in app_names) else set()
    digest = hashlib.sha256()
    for (app, name), migration in sorted(_disk_migrations().items()):
        if app in labels:
            source = Path(sys.modules[type(migration).__module__].__file__).read_bytes()
            digest.update(f"{app}.{name}\n".encode() + hashlib.sha256(source).digest())
    return digest.hexdigest()


def quote(schema_name: str) -> str:
    return connection.ops.quote_name(schema_name)


def build_schema(schema_name: str, *, shard: str = DEFAULT) -> None:
    """Create `schema_name` on `shard` and run every tenant migration in it (the slow path)."""
    with context.public_context(shard=shard):
        with connection.cursor() as cursor:
            cursor.execute(f"CREATE SCHEMA {quote(schema_name)}")
        try:
            # django-tenants' migrate switches the connection's schema itself.
            with guard.dangerously_unguarded():
                call_command(
                    "migrate_schemas", schema_name=schema_name, interactive=False, verbosity=0
                )
        except BaseException:
            context.reapply()
            drop_schema(schema_name, shard=shard)
            raise
        context.reapply()


def drop_schema(schema_name: str, *, shard: str = DEFAULT, gradually: bool | None = None) -> None:
    """Drop `schema_name` and everything in it.

    Outside a transaction, one table per transaction, then the schema: a whole organization's
    schema dropped in one transaction sends PostgreSQL more cache invalidation messages than its
    shared queue holds (4,096), and every backend of the server that has not read them in time,
    in every database, then resets its catalog caches: each connection pays again the first
    request of every organization it serves (docs/operations.md, "Request latency with many
    organizations"). Inside the caller's transaction (a deletion, a move), in one statement.
    `gradually` forces one way or the other (default: gradually when outside a transaction).
    """
    with context.public_context(shard=shard), connection.cursor() as cursor:
        # Rows inserted earlier in the same transaction (a schema built and dropped in one
        # transaction) leave deferred foreign-key checks pending, which block a DROP: settle them.
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        if gradually if gradually is not None else not connection.in_atomic_block:
            cursor.execute(
                "SELECT quote_ident(tablename) FROM pg_tables WHERE schemaname = %s "
                "ORDER BY tablename",
                [schema_name],
            )
            for (table,) in cursor.fetchall():
                # Autocommit: each DROP commits on its own (CASCADE: foreign keys from others).
                cursor.execute(f"DROP TABLE IF EXISTS {quote(schema_name)}.{table} CASCADE")
        cursor.execute(f"DROP SCHEMA IF EXISTS {quote(schema_name)} CASCADE")


def claim(schema_name: str, *, shard: str = DEFAULT) -> bool:
    """Rename a current spare on `shard` to `schema_name`; False if none.

    Runs in the caller's transaction when there is one (provisioning claims and writes the
    tenant's rows together), in its own otherwise.
    """
    with context.public_context(shard=shard), transaction.atomic():
        spare = (
            SpareSchema.objects.select_for_update(skip_locked=True)
            .filter(fingerprint=migrations_fingerprint())
            .order_by("created_at")
            .first()
        )
        if spare is None:
            return False
        with connection.cursor() as cursor:
            cursor.execute(
                f"ALTER SCHEMA {quote(spare.schema_name)} RENAME TO {quote(schema_name)}"
            )
        spare.delete()
    return True


def size(*, shard: str = DEFAULT) -> int:
    with context.public_context(shard=shard):
        return SpareSchema.objects.filter(fingerprint=migrations_fingerprint()).count()


def refill(target: int | None = None, *, shard: str = DEFAULT) -> int:
    """Drop stale spares and build new ones until `target` are ready. Returns how many were built.

    Holds an advisory lock so that concurrent refills (several workers) do not overbuild.
    """
    target = settings.SCHEMA_POOL_SIZE if target is None else target
    built = 0
    with context.public_context(shard=shard):
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_try_advisory_lock(%s)", [REFILL_LOCK_KEY])
            if not cursor.fetchone()[0]:
                return 0
        try:
            # A refill killed mid-build (a worker recycled) leaves a schema without its row.
            registered = set(SpareSchema.objects.values_list("schema_name", flat=True))
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT nspname FROM pg_namespace WHERE nspname LIKE %s",
                    [SPARE_PREFIX.replace("_", r"\_") + "%"],
                )
                orphans = [name for (name,) in cursor.fetchall() if name not in registered]
            for name in orphans:
                drop_schema(name, shard=shard)
            for stale in SpareSchema.objects.exclude(fingerprint=migrations_fingerprint()):
                drop_schema(stale.schema_name, shard=shard)
                stale.delete()
            while size(shard=shard) < target:
                name = f"{SPARE_PREFIX}{secrets.token_hex(6)}"
                build_schema(name, shard=shard)
                SpareSchema.objects.create(schema_name=name, fingerprint=migrations_fingerprint())
                built += 1
        finally:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s)", [REFILL_LOCK_KEY])
    return built


def refill_in_background(shard: str = DEFAULT) -> None:
    """Start a daemon thread that tops the pool up (used after a claim)."""
    if not settings.SCHEMA_POOL_BACKGROUND_REFILL:
        return

    def run() -> None:
        try:
            refill(shard=shard)
        except Exception:
            logger.exception("schema pool refill failed on shard %s", shard)
        finally:
            from django.db import connections

            connections.close_all()

    threading.Thread(target=run, name="schema-pool-refill", daemon=True).start()

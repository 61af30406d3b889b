"""The per-schema record of migration state (tenants.SchemaMigrationState), in the directory.

A schema whose recorded fingerprint equals the code's is current: `migrate_fleet` skips it
without connecting to its shard. Provisioning records a new schema; deletion forgets it.
"""

from __future__ import annotations

from django.utils import timezone

from tenants import context
from tenants.models import SchemaMigrationState


def record(*, shard: str, schema_name: str, fingerprint: str, error: str = "") -> None:
    """Upsert the state of one schema (in the caller's transaction, if any)."""
    with context.public_context():
        SchemaMigrationState.objects.update_or_create(
            shard=shard,
            schema_name=schema_name,
            defaults={"fingerprint": fingerprint, "migrated_at": timezone.now(), "error": error},
        )


def record_failure(*, shard: str, schema_name: str, error: str) -> None:
    """Keep the last good fingerprint (the schema is not current) and note why it failed."""
    with context.public_context():
        updated = SchemaMigrationState.objects.filter(shard=shard, schema_name=schema_name).update(
            error=error[:4000]
        )
        if not updated:
            SchemaMigrationState.objects.create(
                shard=shard,
                schema_name=schema_name,
                fingerprint="",
                migrated_at=timezone.now(),
                error=error[:4000],
            )


def forget(*, shard: str, schema_name: str) -> None:
    with context.public_context():
        SchemaMigrationState.objects.filter(shard=shard, schema_name=schema_name).delete()


def load() -> dict[tuple[str, str], str]:
    """(shard, schema) -> fingerprint, for every recorded schema: one query."""
    with context.public_context():
        return {
            (shard, schema): fingerprint
            for shard, schema, fingerprint in SchemaMigrationState.objects.values_list(
                "shard", "schema_name", "fingerprint"
            )
        }

"""Registering shards and reading what is on them (manage.py shard_add, shard_list)."""

from __future__ import annotations

import re
from dataclasses import dataclass

import dj_database_url
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.db import connection, transaction

from audit import services as audit
from core.actors import Actor
from tenants import context, guard, schema_pool, shards
from tenants.models import Shard, Tenant, TenantStatus

NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]{1,39}$")


def shard_add(*, actor: Actor, name: str, url: str, region: str, weight: int = 100) -> Shard:
    """Register a database as a shard: migrate its public schema, record it, fill its pool.

    Nothing is recorded unless the database answers and its public schema migrates; the map
    changes in every process at once. Adding a shard moves no organization.
    """
    audit.require_staff(actor, "shard.added", "shard", name)
    errors: dict[str, list[str]] = {}
    if not NAME_PATTERN.match(name) or name == shards.DEFAULT:
        errors["name"] = ["Use 2-40 lowercase letters, digits and underscores, not “default”."]
    elif Shard.objects.filter(name=name).exists():
        errors["name"] = ["A shard with that name exists."]
    if region not in settings.REGIONS:
        errors["region"] = [f"Unknown region “{region}”. Known: {', '.join(settings.REGIONS)}."]
    if weight < 1:
        errors["weight"] = ["The weight must be at least 1."]
    try:
        parsed = dj_database_url.parse(url)
        if not parsed.get("NAME") or "postgres" not in parsed.get("ENGINE", ""):
            raise ValueError
    except ValueError:
        errors["url"] = ["Give a postgres:// URL naming a database."]
    if errors:
        raise ValidationError(errors)
    info = shards.ShardInfo(name=name, region=region, weight=weight, url=url)
    shards.register_connection(info)
    with context.public_context(shard=name):
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1")
        except Exception as error:
            raise ValidationError(
                {"url": [f"The database does not answer: {type(error).__name__}."]}
            ) from error
        with guard.dangerously_unguarded():
            call_command("migrate_schemas", shared=True, interactive=False, verbosity=0)
        context.reapply()
    with context.public_context(), transaction.atomic():
        shard = Shard.objects.create(name=name, url=url, region=region, weight=weight)
        audit.record(
            actor=actor,
            action="shard.added",
            resource_type="shard",
            resource_id=name,
            details={"url": info.display_url, "region": region, "weight": weight},
        )
        transaction.on_commit(shards.clear_everywhere)
    schema_pool.refill(shard=name)
    return shard


@dataclass(frozen=True)
class ShardReport:
    shard: shards.ShardInfo
    organizations: int
    schemas: int
    spare_schemas: int
    size_bytes: int


def shard_reports() -> list[ShardReport]:
    """Every shard with its organizations, tenant schemas, spare schemas and database size."""
    with context.public_context():
        counts: dict[str, int] = {}
        for shard_name in Tenant.objects.exclude(status=TenantStatus.DELETING).values_list(
            "shard", flat=True
        ):
            counts[shard_name] = counts.get(shard_name, 0) + 1
    reports = []
    for info in shards.all_shards().values():
        shards.alias_for(info.name)
        with context.public_context(shard=info.name), connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM pg_namespace WHERE nspname LIKE %s", [r"t\_%"])
            (schemas,) = cursor.fetchone()
            cursor.execute("SELECT count(*) FROM tenants_spareschema")
            (spares,) = cursor.fetchone()
            cursor.execute("SELECT pg_database_size(current_database())")
            (size,) = cursor.fetchone()
        reports.append(
            ShardReport(
                shard=info,
                organizations=counts.get(info.name, 0),
                schemas=schemas,
                spare_schemas=spares,
                size_bytes=size,
            )
        )
    return reports

"""Two shards: `default` (the test database, us-east-1) and `shard_b`, a second real database on
the same server, in eu-central-1.

The database is created, migrated and given a spare schema once per session (by the real
`shard_add`); each test that asks for `shard_b` sees it in the map, and writes on it are rolled
back with the test's (`pytest.mark.django_db(databases=SHARDS)`).
"""

from __future__ import annotations

from collections.abc import Iterator

import dj_database_url
import psycopg
import pytest
from django.conf import settings

SHARD_B = "shard_b"
SHARD_B_REGION = "eu-central-1"
SHARDS = ["default", SHARD_B]


def shard_database_url(suffix: str) -> tuple[str, str]:
    """(url, database name) of a database beside the project's, named `<base>_<suffix>`."""
    parsed = dj_database_url.parse(settings.DATABASE_URL)
    name = f"{parsed['NAME']}_{suffix}"
    user = parsed.get("USER") or "postgres"
    host = parsed.get("HOST") or "127.0.0.1"
    port = parsed.get("PORT") or 5432
    return f"postgres://{user}@{host}:{port}/{name}", name


def server_execute(sql: str) -> None:
    parsed = dj_database_url.parse(settings.DATABASE_URL)
    with psycopg.connect(
        host=parsed.get("HOST") or "127.0.0.1",
        port=parsed.get("PORT") or 5432,
        user=parsed.get("USER") or "postgres",
        password=parsed.get("PASSWORD") or None,
        dbname="postgres",
        autocommit=True,
    ) as conn:
        conn.execute(sql)


EU = ("eu-west-1", "eu-central-1", "eu-north-1")


def default_serves_only(settings, *regions: str) -> None:
    from tenants import shards

    settings.DEFAULT_SHARD_REGIONS = list(regions)
    shards.clear()


@pytest.fixture(autouse=True)
def _fresh_shard_map():
    """No test leaves a shard map (or `default`'s regions) cached for the next."""
    from tenants import shards

    shards.clear()
    yield
    shards.clear()


@pytest.fixture(scope="session")
def _shard_b_database(django_db_setup, django_db_blocker) -> Iterator[str]:
    from django.db import connections

    from core.actors import Actor
    from scaling.shards import shard_add
    from tenants import context, shards
    from tenants.models import Shard

    url, name = shard_database_url("shard_b")
    server_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    server_execute(f'CREATE DATABASE "{name}"')
    with django_db_blocker.unblock():
        settings.SCHEMA_POOL_SIZE, size = 1, settings.SCHEMA_POOL_SIZE
        try:
            shard_add(actor=Actor.system("tests"), name=SHARD_B, url=url, region=SHARD_B_REGION)
        finally:
            settings.SCHEMA_POOL_SIZE = size
        # Tests put it in the map themselves (`shard_b`), so that other tests see one shard.
        with context.public_context():
            Shard.objects.filter(name=SHARD_B).delete()
        shards.clear()
    yield url
    with django_db_blocker.unblock():
        connections[SHARD_B].close()
    server_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def shard_b(_shard_b_database, db, settings):
    """`shard_b` in the map (rolled back after the test), and `default` holding no EU region."""
    from tenants import context, routing, shards
    from tenants.models import Shard

    with context.public_context():
        Shard.objects.create(name=SHARD_B, url=_shard_b_database, region=SHARD_B_REGION)
    default_serves_only(settings, *[region for region in settings.REGIONS if region not in EU])
    routing.clear()
    yield shards.get(SHARD_B)
    context.activate(None)
    shards.clear()
    routing.clear()

"""The spare schema pool: what makes a spare stale, and what a refill cleans up."""

import sys
from pathlib import Path

from django.db import connection
from django.test.utils import CaptureQueriesContext

from tenants import context, schema_pool
from tenants.models import SpareSchema


def schemas() -> set[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT nspname FROM pg_namespace")
        return {name for (name,) in cursor.fetchall()}


def test_refill_drops_a_spare_schema_left_without_its_row(db):
    # given: one registered spare, and one a killed refill left behind (schema, no row)
    schema_pool.refill(1)
    registered = SpareSchema.objects.get().schema_name
    with connection.cursor() as cursor:
        cursor.execute("CREATE SCHEMA spare_0rphan")

    # when
    built = schema_pool.refill(1)

    # then
    assert built == 0
    assert "spare_0rphan" not in schemas()
    assert registered in schemas()
    assert list(SpareSchema.objects.values_list("schema_name", flat=True)) == [registered]


def test_refill_leaves_schemas_that_only_look_like_spares(db):
    # given: a schema whose name is not a spare's, though `spare_%` unescaped would match it
    with connection.cursor() as cursor:
        cursor.execute("CREATE SCHEMA sparex_parts")

    # when
    schema_pool.refill(0)

    # then
    assert "sparex_parts" in schemas()


def test_fingerprint_changes_when_a_migration_is_edited_in_place(tmp_path, monkeypatch):
    # given: the fingerprint of the migrations as they are on disk
    module = sys.modules["accounts.migrations.0001_initial"]
    original = schema_pool.migrations_fingerprint()
    edited = tmp_path / "0001_initial.py"
    edited.write_bytes(Path(module.__file__).read_bytes() + b"\n# edited\n")

    # when: the same migration (same name) has other content
    monkeypatch.setattr(module, "__file__", str(edited))
    schema_pool.migrations_fingerprint.cache_clear()
    try:
        changed = schema_pool.migrations_fingerprint()
    finally:
        monkeypatch.undo()
        schema_pool.migrations_fingerprint.cache_clear()

    # then
    assert changed != original
    assert schema_pool.migrations_fingerprint() == original


def test_a_claimed_spare_keeps_its_tables_under_the_new_name(db):
    # given
    schema_pool.refill(1)
    spare = SpareSchema.objects.get().schema_name
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_tables WHERE schemaname = %s", [spare])
        tables = cursor.fetchone()[0]

    # when
    with context.public_context():
        claimed = schema_pool.claim("t_claimed_here")

    # then
    assert claimed is True
    assert spare not in schemas()
    assert SpareSchema.objects.count() == 0
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 't_claimed_here'")
        assert cursor.fetchone()[0] == tables
    assert tables == 35  # every tenant app's tables: the spare was fully migrated


def test_a_schema_dropped_gradually_goes_one_table_per_statement(db):
    # given: a built schema with its tables (migrated). Outside a transaction (autocommit) the
    # drop is gradual by default and each statement commits on its own; the test's transaction
    # cannot leave, so it asks for the gradual drop (the statements are the same).
    assert connection.in_atomic_block
    schema_pool.build_schema("spare_dropme")
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'spare_dropme'")
        tables = cursor.fetchone()[0]
    assert tables > 10

    # when
    with CaptureQueriesContext(connection) as queries:
        schema_pool.drop_schema("spare_dropme", gradually=True)

    # then: gone, each table by its own statement before the schema itself
    assert "spare_dropme" not in schemas()
    statements = [query["sql"] for query in queries.captured_queries]
    drops = [sql for sql in statements if sql.startswith("DROP TABLE")]
    assert len(drops) == tables
    assert statements[-1].startswith('DROP SCHEMA IF EXISTS "spare_dropme"')
    assert not any("SAVEPOINT" in sql for sql in statements)


def test_a_schema_dropped_inside_a_transaction_goes_in_one_statement(db):
    # given: inside the test's transaction (as a deletion or a move drops it)
    schema_pool.build_schema("spare_dropme2")

    # when
    with CaptureQueriesContext(connection) as queries:
        schema_pool.drop_schema("spare_dropme2")

    # then
    assert "spare_dropme2" not in schemas()
    statements = [query["sql"] for query in queries.captured_queries]
    assert not [sql for sql in statements if sql.startswith("DROP TABLE")]
    assert statements[-1].startswith('DROP SCHEMA IF EXISTS "spare_dropme2"')

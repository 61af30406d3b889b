"""core.sql: the kept server-binding cursor, prepared statements, and a transaction whose last
statement travels with its COMMIT."""

from __future__ import annotations

import pytest
from django.db import connection, transaction
from django.db.backends.utils import CursorDebugWrapper
from django.test.utils import CaptureQueriesContext
from psycopg.pq import TransactionStatus

from core import sql

UPDATE = "UPDATE sql_counter SET n = n + %(add)s WHERE id = 1 AND n + %(add)s <= %(most)s"


@pytest.fixture
def counter(django_db_blocker):
    """A committed one-row table of this connection (no test transaction around the test, so
    `sql.atomic` is the outermost block)."""
    with django_db_blocker.unblock():
        with connection.cursor() as cursor:
            cursor.execute("CREATE TEMP TABLE sql_counter (id int PRIMARY KEY, n int NOT NULL)")
            cursor.execute("CREATE TEMP TABLE sql_log (note text NOT NULL)")
            cursor.execute("INSERT INTO sql_counter VALUES (1, 0)")
        yield
        with connection.cursor() as cursor:
            cursor.execute("DROP TABLE sql_counter, sql_log")


def state() -> tuple[int, list[str]]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT n FROM sql_counter")
        n = cursor.fetchone()[0]
        cursor.execute("SELECT note FROM sql_log ORDER BY note")
        return n, [row[0] for row in cursor.fetchall()]


@pytest.fixture
def unblocked(django_db_blocker):
    with django_db_blocker.unblock():
        yield


def test_one_cursor_is_kept_per_connection_and_its_statements_are_logged(unblocked):
    with CaptureQueriesContext(connection) as queries:
        with sql.cursor() as first:
            first.execute("SELECT %s::int + 1", [1])
            assert first.fetchone() == (2,)
        with sql.cursor() as second:
            second.execute("SELECT %s::text", ["kept"])
            assert second.fetchone() == ("kept",)
    assert first.cursor is second.cursor and not second.cursor.closed
    # (after django_tenants' `SET search_path`, when the schema changed)
    assert [query["sql"] for query in queries.captured_queries][-2:] == [
        "SELECT $1::int + 1",
        "SELECT $1::text",
    ]

    connection.close()
    with sql.cursor() as fresh:
        fresh.execute("SELECT 1")
    assert fresh.cursor is not first.cursor and fresh.cursor.connection is connection.connection


def test_the_wrapper_is_kept_until_the_query_log_is_switched_on_or_off(unblocked):
    with sql.cursor() as first:
        pass
    with sql.cursor() as second:
        pass
    assert second is first and not isinstance(first, CursorDebugWrapper)
    with CaptureQueriesContext(connection) as queries, sql.cursor() as logged:
        logged.execute("SELECT %s::int", [3])
    assert isinstance(logged, CursorDebugWrapper) and logged.cursor is first.cursor
    assert queries.captured_queries[-1]["sql"] == "SELECT $1::int"
    with sql.cursor() as after:
        after.execute("SELECT %s::int", [4])
    assert not isinstance(after, CursorDebugWrapper) and after.cursor is first.cursor
    assert len(queries.captured_queries) == 1  # the log is off again


def test_its_statements_run_in_the_tenants_schema_and_are_prepared_after_five_runs(acme):
    with CaptureQueriesContext(connection) as queries:
        for run in range(7):
            with sql.cursor() as cursor:
                cursor.execute("SELECT current_schema(), %s::int", [run])
                assert cursor.fetchone() == (acme.tenant.schema_name, run)
    # The query log shows prepared runs too.
    logged = [query["sql"] for query in queries.captured_queries]
    assert logged[-7:] == ["SELECT current_schema(), $1::int"] * 7
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements")
        prepared = [row[0] for row in cursor.fetchall()]
    assert prepared.count("SELECT current_schema(), $1::int") == 1
    # A statement without parameters, such as django_tenants' `SET search_path` naming the
    # schema, is never prepared: one per organization would crowd out the fixed ones.
    for _ in range(7):
        with sql.cursor() as cursor:
            cursor.execute("SELECT 'never prepared'")
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements")
        prepared = [row[0] for row in cursor.fetchall()]
    assert not [text for text in prepared if "never prepared" in text or "search_path" in text]


def test_the_last_statement_goes_with_the_commit(counter):
    ran = []
    with sql.atomic() as last:
        with connection.cursor() as cursor:
            cursor.execute("INSERT INTO sql_log VALUES ('before')")
        transaction.on_commit(lambda: ran.append("callback"))
        assert last(UPDATE, {"add": 2, "most": 10}, required=True) is True
        # Already committed, in the statement's round trip; the callbacks wait for the block.
        assert connection.connection.info.transaction_status == TransactionStatus.IDLE
        assert ran == []
    assert ran == ["callback"]
    assert state() == (2, ["before"])


def test_the_last_statement_and_the_commit_are_one_round_trip(counter, tmp_path):
    """libpq's protocol trace: after the last statement's Bind, the client sends its Execute, the
    COMMIT and one Sync, and waits once (the server's messages all come after the Sync)."""
    with sql.atomic() as last:
        with connection.cursor() as cursor:
            cursor.execute("INSERT INTO sql_log VALUES ('before')")
        pgconn = connection.connection.pgconn
        with open(tmp_path / "trace", "w") as trace:
            pgconn.trace(trace.fileno())
            try:
                last(UPDATE, {"add": 2, "most": 10}, required=True)
            finally:
                pgconn.untrace()
    lines = (tmp_path / "trace").read_text().splitlines()
    # Each line: a timestamp, F (frontend) or B (backend), the length, the message, its fields.
    messages = [line.split("\t")[1:4:2] for line in lines]
    sent = [name for direction, name in messages if direction == "F"]
    assert sent.count("Sync") == 1 and "COMMIT" in (tmp_path / "trace").read_text()
    first_answer = next(n for n, (direction, _) in enumerate(messages) if direction == "B")
    assert all(direction == "B" for direction, _ in messages[first_answer:])
    assert state() == (2, ["before"])


def test_a_required_last_statement_that_changes_no_row_commits_nothing(counter):
    ran = []
    with pytest.raises(sql.Refused), sql.atomic() as last:
        with connection.cursor() as cursor:
            cursor.execute("INSERT INTO sql_log VALUES ('rolled back')")
        transaction.on_commit(lambda: ran.append("callback"))
        last(UPDATE, {"add": 20, "most": 10}, required=True)

    assert ran == [] and state() == (0, [])
    assert connection.get_autocommit() and not connection.in_atomic_block
    # Not required: no row changed, and the rest of the transaction commits.
    with sql.atomic() as last:
        with connection.cursor() as cursor:
            cursor.execute("INSERT INTO sql_log VALUES ('kept')")
        last(UPDATE, {"add": 20, "most": 10}, required=False)
    assert state() == (0, ["kept"])


def test_nested_in_a_transaction_the_last_statement_runs_at_once(counter):
    with transaction.atomic():
        with sql.atomic() as last:
            assert last(UPDATE, {"add": 20, "most": 10}, required=True) is False
            assert last(UPDATE, {"add": 3, "most": 10}, required=True) is True
        assert connection.connection.info.transaction_status == TransactionStatus.INTRANS
    assert state() == (3, [])


def test_a_prepared_statement_reads_the_schema_of_the_organization_it_runs_for(
    org, other_org, in_tenant
):
    """Prepared in one organization's schema, a statement run for another reads the other's
    table: PostgreSQL plans it again when `search_path` changed."""
    from tests.agents.conftest import make_agent

    with in_tenant(org):
        make_agent("Only in A")
    counts = {}
    for target in (org, other_org, org):
        with in_tenant(target):
            for _ in range(6):  # prepared from the fifth run on
                with sql.cursor() as cursor:
                    cursor.execute(
                        "SELECT count(*) FROM agents_agent WHERE name = %s", ["Only in A"]
                    )
                    counts.setdefault(target.tenant.slug, []).append(cursor.fetchone()[0])
    assert counts == {org.tenant.slug: [1] * 12, other_org.tenant.slug: [0] * 6}

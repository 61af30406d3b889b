"""Statements of the hot write paths, bound on the server.

Django's psycopg backend binds parameters in the client: each parameter is quoted into the
statement's text in Python. The few statements that every instance start and stop sends (the
agent, the instance, the audit event, the pool's counters) go through `cursor()` instead:
Django's own cursor wrapper (the connection and its health check, the tenant's `search_path`,
the tenant guard, the query log of tests) around a psycopg cursor that sends the fixed text and
the values apart (the extended protocol).

They are prepared: psycopg prepares a statement on its fifth run on a connection
(`prepare_threshold`, settings.DATABASES), so PostgreSQL parses and plans it once per
connection instead of on every run. That was half of PostgreSQL's CPU per instance start and
stop (measured 7 Dec 2026: 2.5 against the raw floor's 1.1 ms a pair, with statement logging:
parse and bind-with-planning of every statement). PostgreSQL plans a prepared statement again
when `search_path` changed, so one connection still serves every schema; Django's own cursors
bind in the client and are never prepared. A pooler in front must keep a server connection per
client connection (session mode: the tenant's `search_path` and these statements,
docs/operations.md).

One psycopg cursor per connection is kept open and reused (`_KeptCursor`): building Django's
cursor wrapper around a fresh psycopg cursor (its adapters, the time-zone loader) for each of the
seven statements of a start and stop was a fifth of the request thread's CPU. Django's wrapper
around it is kept too, until the query log is switched on or off (then the other kind of wrapper
is built): 4% of the request thread's CPU.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.db import DEFAULT_DB_ALIAS, DataError, connections, transaction
from django.db.backends.postgresql.base import TIMESTAMPTZ_OID, ServerBindingCursor
from django.db.backends.postgresql.psycopg_any import register_tzloader
from django.db.backends.utils import CursorDebugWrapper
from psycopg import Pipeline
from psycopg.pq import Format


class _KeptCursor(ServerBindingCursor):
    """A server-binding cursor that outlives its `with` block: the connection's next statement
    reuses it (each `execute` starts afresh). It ends with its connection."""

    def close(self) -> None:
        """Kept for the next statement (Django's wrapper closes its cursor on exit)."""

    def execute(self, query: Any, params: Any = None, **options: Any) -> Any:
        if not params:
            # django_tenants' `SET search_path` runs here too, its text naming the schema: one
            # prepared statement per organization would crowd the fixed ones out of psycopg's
            # cache (`prepared_max`).
            options.setdefault("prepare", False)
        return super().execute(query, params, **options)

    def _send_query_prepared(self, name: bytes, pgq: Any, *, binary: bool | None = None) -> None:
        # Django's query log (tests, debug tools) reads the cursor's `_query`, which psycopg
        # (pinned, pyproject.toml) sets for statements sent unprepared only.
        self._query = pgq
        super()._send_query_prepared(name, pgq, binary=binary)


def cursor() -> Any:
    """A cursor of the current connection that binds parameters on the server (use it as a
    context manager, like `connection.cursor()`). Placeholders are psycopg's (`%s`,
    `%(name)s`), and each statement's text must be fixed: only the values vary.

    What `connection.cursor()` does, in its order: the health check, the connection, Django's
    wrapper (the query log of tests, the execute wrappers: the tenant guard), then the tenant's
    `search_path` (django_tenants), around the connection's kept cursor.
    """
    db = connections[DEFAULT_DB_ALIAS]
    db.close_if_health_check_failed()
    db.ensure_connection()
    raw = db.connection
    # The kept cursor is the kept wrapper's (one pair per connection).
    wrapper = getattr(db, "_kept_server_wrapper", None)
    if wrapper is None or wrapper.cursor.connection is not raw:
        kept = _KeptCursor(raw)
        # As Django's own cursors (DatabaseWrapper.create_cursor): times in the connection's zone.
        loader = raw.adapters.get_loader(TIMESTAMPTZ_OID, Format.TEXT)
        if db.timezone != loader.timezone:
            register_tzloader(db.timezone, kept)
        wrapper = None
    else:
        kept = wrapper.cursor
    if wrapper is None or isinstance(wrapper, CursorDebugWrapper) != db.queries_logged:
        with db.wrap_database_errors:
            wrapper = db._kept_server_wrapper = db._prepare_cursor(kept)
    else:
        db.validate_thread_sharing()  # as _prepare_cursor does
    db._handle_search_path(wrapper)
    return wrapper


# --- The last statement and the COMMIT in one round trip -----------------------------------------

# An UPDATE that changed no row fails (division by zero), and the transaction with it.
_ONE_ROW_OR_FAIL = "WITH changed AS ({} RETURNING 1) SELECT 1 / count(*)::int FROM changed"
_DIVISION_BY_ZERO = "22012"
_PIPELINES = Pipeline.is_supported()


class Refused(Exception):
    """The transaction's last statement, sent with its COMMIT, changed no row: nothing of the
    transaction was committed (see `atomic`)."""


class _Last:
    """`last(statement, params, required=...)` of `atomic`."""

    def __init__(self, with_commit: bool) -> None:
        self._with_commit = with_commit

    def __call__(self, statement: str, params: Any, *, required: bool) -> bool:
        """Run the transaction's last statement, an UPDATE without RETURNING; True when it
        changed a row. In an outermost transaction it goes out with the COMMIT (one pipeline,
        one round trip), so True is presumed: if `required` and no row changed, the statement
        fails, nothing is committed and Refused is raised. Nested in another transaction, it
        runs at once and the answer is the real one.
        """
        with cursor() as running:
            if not self._with_commit:
                running.execute(statement, params)
                return running.rowcount == 1
            raw = running.connection
            try:
                with connections[DEFAULT_DB_ALIAS].wrap_database_errors, raw.pipeline():
                    running.execute(
                        _ONE_ROW_OR_FAIL.format(statement) if required else statement, params
                    )
                    # COMMIT as a statement, not psycopg's commit(), which syncs the pipeline
                    # (a round trip) before the pipeline's exit syncs again (another): this way
                    # the statement, the COMMIT and one Sync go out and come back together.
                    # Django's commit, when the atomic block ends, then finds the transaction
                    # over and sends nothing (its on-commit callbacks still run).
                    running.execute("COMMIT")
            except DataError as error:
                if required and getattr(error.__cause__, "sqlstate", None) == _DIVISION_BY_ZERO:
                    raise Refused from error
                raise
        return True


@contextmanager
def atomic() -> Iterator[_Last]:
    """`transaction.atomic()` whose last statement may travel with its COMMIT (`_Last`).

    A statement that locks a row every writer of an organization needs (the pool's counters)
    then holds that lock for PostgreSQL's own time only: the COMMIT does not wait for the
    client to be scheduled again after the statement's answer, which on a loaded machine (8
    writers on 2 cores) was most of the time the lock was held. Nothing may be sent after
    `last`; the on-commit callbacks run as usual, once the commit succeeded.
    """
    outermost = not connections[DEFAULT_DB_ALIAS].in_atomic_block
    with transaction.atomic():
        yield _Last(outermost and _PIPELINES)

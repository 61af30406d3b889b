"""Statements of the hot write paths, bound on the server.

Django's psycopg backend binds parameters in the client: each parameter is quoted into the
statement's text in Python. The few statements that every instance start and stop sends (the
agent, the instance, the audit event, the pool's counters) go through `cursor()` instead:
Django's own cursor wrapper (the connection and its health check, the tenant's `search_path`,
the tenant guard, the query log of tests) around a psycopg cursor that sends the fixed text and
the values apart (the extended protocol).

They are not prepared: Django sets psycopg's `prepare_threshold` to None unless the database's
OPTIONS set it, and this project leaves it so. Turning it on was measured (3 Dec 2026) to save
within the noise of an instance start (3.5-4.0 against 4.2-4.8 ms of request-thread CPU a pair,
under the profiler), and Django's query log (connection.queries, which tests read) shows a
prepared statement's SQL as None unless a private psycopg method is overridden. A pooler in front
must keep a server connection per client connection in any case (session mode: the tenant's
`search_path`, docs/operations.md).

One psycopg cursor per connection is kept open and reused (`_KeptCursor`): building Django's
cursor wrapper around a fresh psycopg cursor (its adapters, the time-zone loader) for each of the
seven statements of a start and stop was a fifth of the request thread's CPU.
"""

from __future__ import annotations

from typing import Any

from django.db import DEFAULT_DB_ALIAS, connections
from django.db.backends.postgresql.base import TIMESTAMPTZ_OID, ServerBindingCursor
from django.db.backends.postgresql.psycopg_any import register_tzloader
from psycopg.pq import Format


class _KeptCursor(ServerBindingCursor):
    """A server-binding cursor that outlives its `with` block: the connection's next statement
    reuses it (each `execute` starts afresh). It ends with its connection."""

    def close(self) -> None:
        """Kept for the next statement (Django's wrapper closes its cursor on exit)."""


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
    kept = getattr(db, "_kept_server_cursor", None)
    if kept is None or kept.connection is not raw:
        kept = _KeptCursor(raw)
        # As Django's own cursors (DatabaseWrapper.create_cursor): times in the connection's zone.
        loader = raw.adapters.get_loader(TIMESTAMPTZ_OID, Format.TEXT)
        if db.timezone != loader.timezone:
            register_tzloader(db.timezone, kept)
        db._kept_server_cursor = kept
    with db.wrap_database_errors:
        wrapper = db._prepare_cursor(kept)
    db._handle_search_path(wrapper)
    return wrapper

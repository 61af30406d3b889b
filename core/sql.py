"""Statements of the hot write paths, sent as prepared statements.

Django's psycopg backend binds parameters in the client: every statement reaches PostgreSQL as
new text, parsed and planned again, and each parameter is quoted into it in Python. The few
statements that every instance start and stop sends (the agent, the instance, the audit event,
the pool's counters) go through `cursor()` instead: Django's own cursor wrapper (the connection
and its health check, the tenant's `search_path`, the tenant guard, the query log of tests)
around a psycopg cursor that binds on the server. psycopg prepares a statement once it has run
a few times on a connection (its `prepare_threshold`), and PostgreSQL then skips parsing and
planning it. PostgreSQL parses a prepared statement again when `search_path` has changed since
(PREPARE's documentation), so one connection serves every organization's schema.

A pooler between Django and PostgreSQL must therefore keep a server connection per client
connection (session mode, or transaction mode with prepared-statement support, as
docs/operations.md says).
"""

from __future__ import annotations

from typing import Any

from django.db import connection
from django.db.backends.postgresql.base import TIMESTAMPTZ_OID, ServerBindingCursor
from django.db.backends.postgresql.psycopg_any import register_tzloader
from psycopg.pq import Format


def cursor() -> Any:
    """A cursor of the current connection that binds parameters on the server (use it as a
    context manager, like `connection.cursor()`). Placeholders are psycopg's (`%s`,
    `%(name)s`), and each statement's text must be fixed: only the values vary."""
    wrapper = connection.cursor()
    client = wrapper.cursor
    server = ServerBindingCursor(client.connection)
    # As Django's own cursors (DatabaseWrapper.create_cursor): times in the connection's zone.
    loader = client.connection.adapters.get_loader(TIMESTAMPTZ_OID, Format.TEXT)
    if connection.timezone != loader.timezone:
        register_tzloader(connection.timezone, server)
    client.close()
    wrapper.cursor = server
    return wrapper

"""A query guard: every query must run in the schema of the tenant context that is current.

Switched on with `TENANT_CONTEXT_GUARD=1` (the test suite always runs with it). It wraps every
connection's queries and raises `TenantContextLeak` when the connection is pointed at another
schema than `tenants.context` says: the failure mode of a thread hop or a pooled connection that
kept the previous tenant's `search_path`.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.conf import settings
from django.db.backends.signals import connection_created


class TenantContextLeak(RuntimeError):
    pass


_suspended: contextvars.ContextVar[bool] = contextvars.ContextVar("guard_suspended", default=False)


@contextmanager
def dangerously_unguarded() -> Iterator[None]:
    """Suspend the guard for code that switches schemas itself (django-tenants' migrate)."""
    token = _suspended.set(True)
    try:
        yield
    finally:
        _suspended.reset(token)


def check(execute: Any, sql: str, params: Any, many: bool, context: dict[str, Any]) -> Any:
    from tenants import context as tenant_context

    if _suspended.get():
        return execute(sql, params, many, context)
    connection = context["connection"]
    expected = tenant_context.expected_schema()
    if connection.schema_name != expected:
        raise TenantContextLeak(
            f"query in schema {connection.schema_name!r} while the current tenant context is "
            f"{expected!r}: {sql[:120]}"
        )
    # An organization's schema on another shard than its own: a stale copy (a move) or a leak.
    # (Public schemas are the same everywhere; Django's own housekeeping runs in them.)
    if expected != settings.PUBLIC_SCHEMA_NAME and connection.alias != (
        alias := tenant_context.expected_alias()
    ):
        raise TenantContextLeak(
            f"query on shard {connection.alias!r} while the current context is on {alias!r}: "
            f"{sql[:120]}"
        )
    return execute(sql, params, many, context)


def _wrap(sender: Any, connection: Any, **kwargs: Any) -> None:
    if check not in connection.execute_wrappers:
        connection.execute_wrappers.append(check)


def install_if_enabled() -> None:
    if settings.TENANT_CONTEXT_GUARD:
        install()


def install() -> None:
    from django.db import connections

    connection_created.connect(_wrap, dispatch_uid="tenants.guard")
    for connection in connections.all(initialized_only=True):
        _wrap(None, connection)

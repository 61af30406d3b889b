"""The one place that enters and reads a tenant context: HTTP, WebSocket, commands, background work.

django-tenants keeps the current schema on the (thread-local) database connection. That is not
enough on its own: a thread or an async hop gets a different connection, and a pooled connection
keeps whatever `search_path` the previous user left. So the context is also kept in a context
variable, which `asgiref`'s `sync_to_async` carries across hops, and `tenants.guard` checks, when
switched on, that every query runs in the schema this module says is current.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connection, connections

if TYPE_CHECKING:
    from tenants.models import Tenant

_current: contextvars.ContextVar[Tenant | None] = contextvars.ContextVar(
    "current_tenant", default=None
)


def current_tenant() -> Tenant | None:
    """The tenant whose context is entered, or None in the public context."""
    return _current.get()


class OutsideOrganization(RuntimeError):
    """Code that works only inside an organization ran outside one (a programming error)."""


def require_tenant() -> Tenant:
    """The current organization; raises OutsideOrganization in the public context."""
    tenant = _current.get()
    if tenant is None:
        raise OutsideOrganization("this works only inside an organization's context")
    return tenant


def expected_schema() -> str:
    tenant = _current.get()
    return tenant.schema_name if tenant is not None else settings.PUBLIC_SCHEMA_NAME


def activate(tenant: Tenant | None) -> contextvars.Token:
    """Make `tenant` current for this context and its connection (None: the public schema).

    Returns a token for `deactivate`. Setting the schema the connection already has is free:
    django-tenants then issues no `SET search_path` at all.
    """
    token = _current.set(tenant)
    _point_connection_at(tenant)
    return token


def deactivate(token: contextvars.Token) -> None:
    _current.reset(token)
    _point_connection_at(_current.get())


def reapply() -> None:
    """Point the connection back at the current context after code that switched it itself."""
    _point_connection_at(_current.get())


def _point_connection_at(tenant: Tenant | None) -> None:
    # This runs on every request: look the thread's connection up once, rather than once per
    # attribute read through the `connection` proxy.
    wrapper = connections[DEFAULT_DB_ALIAS]
    if tenant is None:
        if wrapper.schema_name != settings.PUBLIC_SCHEMA_NAME:
            wrapper.set_schema_to_public()
        return
    if wrapper.schema_name == tenant.schema_name and not wrapper.include_public_schema:
        # Already pointed there. Whether the `SET search_path` has been sent yet does not matter:
        # django-tenants sends it before the next query whenever it is not known to be in force
        # (new connection, rollback), so `set_tenant` would only force a needless second one.
        wrapper.tenant = tenant
        return
    # include_public=False: a table missing from the tenant's schema is an error, never a silent
    # read of `public`. Public data (plans, domains) is read in `public_context()`.
    wrapper.set_tenant(tenant, include_public=False)


@contextmanager
def tenant_context(tenant: Tenant) -> Iterator[Tenant]:
    """Run the block in `tenant`'s schema; restores the previous context afterwards."""
    token = activate(tenant)
    try:
        yield tenant
    finally:
        deactivate(token)


@contextmanager
def public_context() -> Iterator[None]:
    """Run the block in the public schema (tenants, domains, plans, staff)."""
    token = activate(None)
    try:
        yield
    finally:
        deactivate(token)


def each_tenant(*, statuses: Iterable[str], slug: str | None = None) -> Iterator[Tenant]:
    """Every organization with one of `statuses` (or only `slug`), by slug, each yielded inside
    its own context: for commands and background work that visit organizations one by one."""
    from tenants.models import Tenant  # models are not ready when this module is first imported

    with public_context():
        tenants = Tenant.objects.select_related("plan").filter(status__in=list(statuses))
        if slug is not None:
            tenants = tenants.filter(slug=slug)
        tenants = list(tenants.exclude(schema_name=settings.PUBLIC_SCHEMA_NAME).order_by("slug"))
    for tenant in tenants:
        with tenant_context(tenant):
            yield tenant


def database_schema() -> str:
    """Ask PostgreSQL which schema queries resolve to right now (for tests and assertions)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_schema()")
        return cursor.fetchone()[0]

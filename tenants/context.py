"""The one place that enters and reads a tenant context: HTTP, WebSocket, commands, background work.

django-tenants keeps the current schema on the (thread-local) database connection. That is not
enough on its own: a thread or an async hop gets a different connection, and a pooled connection
keeps whatever `search_path` the previous user left. So the context is also kept in a context
variable, which `asgiref`'s `sync_to_async` carries across hops, and `tenants.guard` checks, when
switched on, that every query runs in the schema this module says is current.

Organizations live on several databases (shards, tenants.shards). Entering an organization's
context also binds its shard's connection as this thread's `default` connection: the ORM,
`transaction.atomic()`, `on_commit` and raw `connection.cursor()` all follow the context without
naming an alias, and django-tenants (which only knows `default`) migrates and switches schemas on
the right server. The public context binds the real `default` again: the directory (tenants,
domains, plans, staff) lives there. With one shard nothing is ever rebound.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connection, connections

from tenants import shards

if TYPE_CHECKING:
    from tenants.models import Tenant

_current: contextvars.ContextVar[Tenant | None] = contextvars.ContextVar(
    "current_tenant", default=None
)


# The shard whose public schema the public context is in (only shard operations leave `default`).
_public_shard: contextvars.ContextVar[str] = contextvars.ContextVar(
    "public_shard", default=DEFAULT_DB_ALIAS
)
# Where a thread keeps its real `default` connection while a shard's is bound in its place.
_REAL_DEFAULT = "agentplane_directory_connection"


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


def expected_alias() -> str:
    """The shard (database alias) the current context's queries must run on."""
    tenant = _current.get()
    return shards.alias_for(tenant.shard if tenant is not None else _public_shard.get())


def activate(tenant: Tenant | None, *, shard: str | None = None) -> contextvars.Token:
    """Make `tenant` current for this context and its connection (None: the public schema of
    `shard`, by default the directory's, `default`).

    Returns a token for `deactivate`. Setting the schema the connection already has is free:
    django-tenants then issues no `SET search_path` at all.
    """
    token = _current.set(tenant)
    shard_token = _public_shard.set(shard or DEFAULT_DB_ALIAS)
    _point_connection_at(tenant)
    return _Tokens(token, shard_token)


class _Tokens:
    __slots__ = ("tenant", "shard")

    def __init__(self, tenant: contextvars.Token, shard: contextvars.Token) -> None:
        self.tenant, self.shard = tenant, shard


def deactivate(token: Any) -> None:
    if isinstance(token, _Tokens):
        _public_shard.reset(token.shard)
        token = token.tenant
    _current.reset(token)
    _point_connection_at(_current.get())


def reapply() -> None:
    """Point the connection back at the current context after code that switched it itself."""
    _point_connection_at(_current.get())


def _point_connection_at(tenant: Tenant | None) -> None:
    # This runs on every request: look the thread's connection up once, rather than once per
    # attribute read through the `connection` proxy.
    wrapper = _bind(expected_alias())
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


def _bind(alias: str) -> Any:
    """Make `alias`'s connection this thread's `default` one; returns it."""
    storage = connections._connections
    real = getattr(storage, _REAL_DEFAULT, None)
    if real is None:
        if alias == DEFAULT_DB_ALIAS:
            return connections[DEFAULT_DB_ALIAS]  # never rebound in this thread: the common case
        real = connections[DEFAULT_DB_ALIAS]
        setattr(storage, _REAL_DEFAULT, real)
    target = real if alias == DEFAULT_DB_ALIAS else connections[alias]
    previous = getattr(storage, DEFAULT_DB_ALIAS, None)
    if previous is not target:
        if previous is not None and previous is not real:
            # A shard's connection left unbound keeps no organization's schema (free: the
            # `SET search_path` is only sent before its next query).
            previous.set_schema_to_public()
        setattr(storage, DEFAULT_DB_ALIAS, target)
    return target


def directory_connection() -> Any:
    """The real `default` connection (the directory), whichever shard's is bound now."""
    real = getattr(connections._connections, _REAL_DEFAULT, None)
    return real if real is not None else connections[DEFAULT_DB_ALIAS]


@contextmanager
def directory_cursor() -> Iterator[Any]:
    """A cursor on the directory's connection, for schema-qualified reads of `public` tables."""
    with directory_connection().cursor() as cursor:
        yield cursor


def close_directory_if_obsolete(**kwargs: Any) -> None:
    """Django's request-end clean-up only sees the bound connection: also check the real one."""
    real = getattr(connections._connections, _REAL_DEFAULT, None)
    # Never inside a transaction (the test client's requests run inside the test's).
    if real is not None and real is not connections[DEFAULT_DB_ALIAS] and not real.in_atomic_block:
        real.close_if_unusable_or_obsolete()


@contextmanager
def tenant_context(tenant: Tenant) -> Iterator[Tenant]:
    """Run the block in `tenant`'s schema; restores the previous context afterwards."""
    token = activate(tenant)
    try:
        yield tenant
    finally:
        deactivate(token)


@contextmanager
def public_context(*, shard: str | None = None) -> Iterator[None]:
    """Run the block in the public schema (tenants, domains, plans, staff); with `shard`, in
    that shard's public schema (its spare-schema pool, its migration state)."""
    token = activate(None, shard=shard)
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

"""The gateway's way into the database from async code: `database_sync_to_async`, with the
connection health check done at most every GATEWAY_DB_HEALTH_CHECK_SECONDS.

Channels' `database_sync_to_async` calls Django's `close_old_connections()` around every call,
and with `CONN_HEALTH_CHECKS` (portal.settings) the first query of each call then pings the
server (`SELECT 1`) first: one more round trip for every publish, heartbeat and subscribe on
the consumers' single database thread. Here a connection that passed a check (or served a call
without error) within the interval skips it. What the check protects against still holds: a
connection with an error in its last call is checked (and replaced) at once by Django, one that
dies silently fails one call at most, then is replaced; CONN_MAX_AGE is honoured as before.
"""

from __future__ import annotations

import time
from typing import Any

from channels.db import DatabaseSyncToAsync
from django.conf import settings
from django.db import close_old_connections, connections


def _skip_recent_health_checks() -> None:
    interval = float(getattr(settings, "GATEWAY_DB_HEALTH_CHECK_SECONDS", 5.0))
    now = time.monotonic()
    for connection in connections.all(initialized_only=True):
        if connection.connection is None or connection.errors_occurred:
            continue
        checked_at = getattr(connection, "gateway_checked_at", None)
        if checked_at is not None and now - checked_at < interval:
            connection.health_check_done = True
        else:
            connection.gateway_checked_at = now  # checked by this call's first query


class GatewayDatabaseSyncToAsync(DatabaseSyncToAsync):
    def thread_handler(self, loop: Any, *args: Any, **kwargs: Any) -> Any:
        close_old_connections()
        _skip_recent_health_checks()
        try:
            return super(DatabaseSyncToAsync, self).thread_handler(loop, *args, **kwargs)
        finally:
            close_old_connections()


def database_sync_to_async(function: Any = None, thread_sensitive: bool = True) -> Any:
    """Like channels.db.database_sync_to_async (usable bare or as a decorator)."""
    if function is None:
        return lambda f: GatewayDatabaseSyncToAsync(f, thread_sensitive=thread_sensitive)
    return GatewayDatabaseSyncToAsync(function, thread_sensitive=thread_sensitive)

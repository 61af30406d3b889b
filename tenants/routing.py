"""Host to tenant: a per-process cache, dropped in every process when any tenant changes.

django-tenants' stock middleware queries the domain table and sets `search_path` twice on every
request. Here a host is looked up once per process and kept; suspending, reactivating, deleting
or re-planning an organization drops the cache in every process at once (tenants.invalidation:
Redis pub/sub when `REDIS_URL` is set; in-process otherwise, where there is only one process).
Such changes are rare, so dropping the whole cache costs one domain query per host afterwards.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

from tenants import context, invalidation

if TYPE_CHECKING:
    from tenants.models import Tenant

INVALIDATION_TOPIC = "tenant-routing"
# A bound on how long a missed invalidation (say, Redis restarting) can keep a stale entry.
MAX_AGE_SECONDS = 300.0

_cache: dict[str, tuple[float, Tenant | None]] = {}
# The same rows by primary key, for reads of a tenant's plan and limits (agents.selectors).
_by_pk: dict[int, tuple[float, Tenant]] = {}
_lock = threading.Lock()


def lookup(host: str) -> Tenant | None:
    """The active or suspended tenant serving `host`, or None. Cached per process."""
    invalidation.ensure_listening()
    now = time.monotonic()
    entry = _cache.get(host)
    if entry is not None and now - entry[0] < MAX_AGE_SECONDS:
        return entry[1]
    tenant = _load(host)
    with _lock:
        _cache[host] = (now, tenant)
    return tenant


def _load(host: str) -> Tenant | None:
    from tenants.models import Domain, TenantStatus

    with context.public_context():
        domain = (
            Domain.objects.select_related("tenant", "tenant__plan")
            .exclude(tenant__status=TenantStatus.DELETING)
            .filter(domain=host)
            .first()
        )
    return domain.tenant if domain is not None else None


def tenant_row(pk: int) -> Tenant:
    """The tenant row with its plan, as `public` has it; cached per process like `lookup` and
    dropped with it (a plan change, a staff override: `clear_everywhere`).
    Tenant.DoesNotExist if there is none."""
    from tenants.models import Tenant

    invalidation.ensure_listening()
    now = time.monotonic()
    entry = _by_pk.get(pk)
    if entry is not None and now - entry[0] < MAX_AGE_SECONDS:
        return entry[1]
    with context.public_context():
        tenant = Tenant.objects.select_related("plan").get(pk=pk)
    with _lock:
        _by_pk[pk] = (now, tenant)
    return tenant


def clear() -> None:
    """Drop this process's cache."""
    with _lock:
        _cache.clear()
        _by_pk.clear()


def clear_everywhere() -> None:
    """Drop the cache in every process (call after a tenant's routing or plan changed)."""
    invalidation.publish(INVALIDATION_TOPIC)


def clear_on_commit() -> None:
    """For a service changing a tenant's routing, plan or limits, inside its transaction: drop
    this process's cache now (the change's own transaction reads what it wrote) and every
    process's after commit (an entry reloaded in between, from the rows before the change, goes
    too)."""
    from django.db import transaction

    clear()
    transaction.on_commit(clear_everywhere)


invalidation.register(INVALIDATION_TOPIC, clear)

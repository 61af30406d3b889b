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


def clear() -> None:
    """Drop this process's cache."""
    with _lock:
        _cache.clear()


def clear_everywhere() -> None:
    """Drop the cache in every process (call after a tenant's routing or plan changed)."""
    invalidation.publish(INVALIDATION_TOPIC)


invalidation.register(INVALIDATION_TOPIC, clear)

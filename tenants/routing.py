"""Host to tenant: a per-process cache, invalidated in every process when a tenant changes.

django-tenants' stock middleware queries the domain table and sets `search_path` twice on every
request. Here a host is looked up once per process and kept; suspending, reactivating or deleting
an organization publishes an invalidation that every process applies at once (through Redis
pub/sub when `REDIS_URL` is set; in-process otherwise, where there is only one process).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING

from django.conf import settings

from tenants import context

if TYPE_CHECKING:
    from tenants.models import Tenant

logger = logging.getLogger(__name__)

EVERY_HOST = "*"
# A bound on how long a missed invalidation (say, Redis restarting) can keep a stale entry.
MAX_AGE_SECONDS = 300.0

_cache: dict[str, tuple[float, Tenant | None]] = {}
_lock = threading.Lock()
_listener: threading.Thread | None = None


def lookup(host: str) -> Tenant | None:
    """The active or suspended tenant serving `host`, or None. Cached per process."""
    _ensure_listener()
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


def invalidation_channel() -> str:
    """Per database: deployments (or test runs) sharing one Redis do not disturb each other."""
    return f"agentplane:{settings.DATABASES['default']['NAME']}:tenant-routing"


def invalidate(tenant: Tenant) -> None:
    """Forget every host of `tenant` in every process."""
    from tenants.models import Domain

    with context.public_context():
        hosts = list(Domain.objects.filter(tenant=tenant).values_list("domain", flat=True))
    invalidate_hosts(hosts)


def clear_everywhere() -> None:
    """Forget every host in every process (a plan changed: cached tenants carry their plan)."""
    invalidate_hosts([EVERY_HOST])


def invalidate_hosts(hosts: list[str]) -> None:
    _forget(hosts)
    if settings.REDIS_URL:
        try:
            _redis().publish(invalidation_channel(), "\n".join(hosts))
        except Exception:
            # Other processes then keep the entry for at most MAX_AGE_SECONDS.
            logger.error("could not publish a tenant routing invalidation", exc_info=True)


def _forget(hosts: list[str]) -> None:
    if EVERY_HOST in hosts:
        clear()
        return
    with _lock:
        for host in hosts:
            _cache.pop(host, None)


def clear() -> None:
    with _lock:
        _cache.clear()


def _redis():
    import redis

    return redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=1, socket_timeout=1)


def _ensure_listener() -> None:
    """Start this process's invalidation listener (once, lazily: after a server forks workers)."""
    global _listener
    if not settings.REDIS_URL or (_listener is not None and _listener.is_alive()):
        return
    with _lock:
        if _listener is not None and _listener.is_alive():
            return
        ready = threading.Event()
        _listener = threading.Thread(
            target=_listen, args=(ready,), name="tenant-routing-invalidation", daemon=True
        )
        _listener.start()
    # Until the subscription is live, an invalidation could slip past: wait briefly for it.
    if not ready.wait(timeout=1.0):
        clear()


def _listen(ready: threading.Event) -> None:
    import redis

    client = redis.Redis.from_url(
        settings.REDIS_URL, socket_connect_timeout=1, health_check_interval=30
    )
    while True:
        try:
            pubsub = client.pubsub(ignore_subscribe_messages=True)
            pubsub.subscribe(invalidation_channel())
            # Anything published while we were not listening is lost: start from a clean cache.
            clear()
            ready.set()
            for message in pubsub.listen():
                if message.get("type") == "message":
                    _forget(message["data"].decode().split("\n"))
        except redis.RedisError:
            logger.warning("tenant routing listener lost Redis; retrying", exc_info=True)
            clear()
            time.sleep(1.0)

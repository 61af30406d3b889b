"""Tell every process to drop a cached value: Redis pub/sub when REDIS_URL is set, else in-process.

A module that caches something per process (the signing keyring, say) registers a topic with a
callback; `publish(topic)` runs the callback here at once and, through Redis, in every other
process. When the subscription drops, every callback runs (anything published meanwhile is lost),
so a cache never outlives a missed message by more than its own maximum age.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from django.conf import settings

logger = logging.getLogger(__name__)

_callbacks: dict[str, Callable[[], None]] = {}
_lock = threading.Lock()
_listener: threading.Thread | None = None


def register(topic: str, callback: Callable[[], None]) -> None:
    """Run `callback` (it drops a cache) whenever `topic` is published, in this process."""
    _callbacks[topic] = callback


def channel() -> str:
    """Per database: deployments (or test runs) sharing one Redis do not disturb each other."""
    return f"agentplane:{settings.DATABASES['default']['NAME']}:invalidate"


def publish(topic: str) -> None:
    _run(topic)
    if not settings.REDIS_URL:
        return
    try:
        _redis().publish(channel(), topic)
    except Exception:
        # Other processes then keep their cache until its own maximum age.
        logger.error("could not publish the invalidation of %s", topic, exc_info=True)


def ensure_listening() -> None:
    """Start this process's listener once, lazily (after a server forks its workers)."""
    global _listener
    if not settings.REDIS_URL or (_listener is not None and _listener.is_alive()):
        return
    with _lock:
        if _listener is not None and _listener.is_alive():
            return
        ready = threading.Event()
        _listener = threading.Thread(
            target=_listen, args=(ready,), name="cache-invalidation", daemon=True
        )
        _listener.start()
    if not ready.wait(timeout=1.0):
        _run_all()


def _run(topic: str) -> None:
    callback = _callbacks.get(topic)
    if callback is not None:
        callback()


def _run_all() -> None:
    for callback in list(_callbacks.values()):
        callback()


def _redis():
    import redis

    return redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=1, socket_timeout=1)


def _listen(ready: threading.Event) -> None:
    import redis

    client = redis.Redis.from_url(
        settings.REDIS_URL, socket_connect_timeout=1, health_check_interval=30
    )
    while True:
        try:
            pubsub = client.pubsub(ignore_subscribe_messages=True)
            pubsub.subscribe(channel())
            _run_all()
            ready.set()
            for message in pubsub.listen():
                if message.get("type") == "message":
                    _run(message["data"].decode())
        except redis.RedisError:
            logger.warning("cache invalidation listener lost Redis; retrying", exc_info=True)
            _run_all()
            time.sleep(1.0)

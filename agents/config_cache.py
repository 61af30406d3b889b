"""The config read cache: per organization (its tenant id in every key), dropped on every write.

Each namespace (an organization's public id, or `platform` for the staff defaults) has a
generation token in the cache; values are cached under `<namespace>:<generation>:<key>`. A write
replaces the token after its transaction commits, so every process (the cache is Redis when
`REDIS_URL` is set) misses from then on and reads the database again. A reader that raced the
write can only have stored under the old generation, which nobody reads any more: invalidation
never loses to a slow reader. Entries also expire after `TIMEOUT`, which bounds staleness if an
invalidation is lost (Redis unreachable at that moment).

Redis trouble never fails a read: it logs and reads the database (fail open: config is not a
security decision; limits and permissions are never cached here).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from django.core.cache import cache

logger = logging.getLogger(__name__)

PREFIX = "agents:config"
PLATFORM = "platform"
TIMEOUT = 300
_ABSENT = ("absent",)


def _generation_key(namespace: str) -> str:
    return f"{PREFIX}:{namespace}:generation"


def _value_key(namespace: str, generation: str, key: str) -> str:
    return f"{PREFIX}:{namespace}:{generation}:{key}"


def _generations(namespaces: list[str]) -> dict[str, str]:
    keys = {_generation_key(namespace): namespace for namespace in namespaces}
    found = cache.get_many(list(keys))
    generations = {keys[k]: v for k, v in found.items()}
    for generation_key, namespace in keys.items():
        if namespace not in generations:
            # First reader (or the token was evicted): a fresh random token can never equal an
            # old one, so entries stored under an earlier generation are never read again.
            cache.add(generation_key, uuid.uuid4().hex, timeout=None)
            generations[namespace] = cache.get(generation_key)
    return generations


def read(
    requests: dict[str, Iterable[str]], load: Callable[[str, list[str]], dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    """Values of `keys` for each namespace, from the cache or `load(namespace, missing_keys)`.

    `requests` maps namespace -> keys; the result maps namespace -> {key: value} for the keys
    that exist. Two cache round trips when everything is cached.
    """
    wanted = {namespace: list(dict.fromkeys(keys)) for namespace, keys in requests.items()}
    try:
        generations = _generations(list(wanted))
        cache_keys = {
            _value_key(namespace, generations[namespace], key): (namespace, key)
            for namespace, keys in wanted.items()
            for key in keys
        }
        found = cache.get_many(list(cache_keys))
    except Exception:
        logger.warning("config cache unavailable; reading the database", exc_info=True)
        return {namespace: load(namespace, keys) for namespace, keys in wanted.items()}

    result: dict[str, dict[str, Any]] = {namespace: {} for namespace in wanted}
    missing: dict[str, list[str]] = {}
    for cache_key, (namespace, key) in cache_keys.items():
        if cache_key not in found:
            missing.setdefault(namespace, []).append(key)
        elif found[cache_key] != _ABSENT:
            result[namespace][key] = found[cache_key][1]
    to_store: dict[str, Any] = {}
    for namespace, keys in missing.items():
        loaded = load(namespace, keys)
        for key in keys:
            cache_key = _value_key(namespace, generations[namespace], key)
            if key in loaded:
                result[namespace][key] = loaded[key]
                to_store[cache_key] = ("present", loaded[key])
            else:
                to_store[cache_key] = _ABSENT
    if to_store:
        try:
            cache.set_many(to_store, timeout=TIMEOUT)
        except Exception:
            logger.warning("could not fill the config cache", exc_info=True)
    return result


def invalidate(namespace: str) -> None:
    """Drop every cached value of `namespace`, in every process (call after commit)."""
    try:
        cache.set(_generation_key(namespace), uuid.uuid4().hex, timeout=None)
    except Exception:
        # Readers then serve cached values until they expire (TIMEOUT).
        logger.error("could not invalidate the config cache of %s", namespace, exc_info=True)

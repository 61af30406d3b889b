"""The config read cache: per organization (its tenant id in every key), dropped on every write.

Each namespace (an organization's public id, or `platform` for the staff defaults) has a
generation token in the cache; values are cached under `<namespace>:<generation>:<key>`. A write
replaces the token after its transaction commits, so every process (the cache is Redis when
`REDIS_URL` is set) misses from then on and reads the database again. A reader that raced the
write can only have stored under the old generation, which nobody reads any more: invalidation
never loses to a slow reader. Entries also expire after `TIMEOUT`, which bounds staleness if an
invalidation is lost (Redis unreachable at that moment).

One round trip per read: each process remembers the last generation it saw and fetches the
current tokens and the values under the remembered ones in one MGET (atomic in Redis). Values
are used only if the token has not moved; after a write, a second MGET fetches the new ones.

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
# A token that expires is replaced by a fresh one (values under the old one are then unreachable),
# so tokens can expire too: a deleted organization's keys leave Redis within a day.
GENERATION_TIMEOUT = 24 * 60 * 60
_ABSENT = ("absent",)

# namespace -> the generation this process saw last (a guess, checked on every read).
_seen: dict[str, str] = {}


def _generation_key(namespace: str) -> str:
    return f"{PREFIX}:{namespace}:generation"


def _value_key(namespace: str, generation: str, key: str) -> str:
    return f"{PREFIX}:{namespace}:{generation}:{key}"


def _fetch(wanted: dict[str, list[str]]) -> tuple[dict[str, str], dict[str, Any]]:
    """(namespace -> current generation, cache key -> cached value under it)."""
    guesses = {namespace: _seen.get(namespace) for namespace in wanted}
    keys = [_generation_key(namespace) for namespace in wanted]
    keys += [
        _value_key(namespace, guesses[namespace], key)
        for namespace, names in wanted.items()
        if guesses[namespace] is not None
        for key in names
    ]
    found = cache.get_many(keys)
    generations: dict[str, str] = {}
    moved: list[str] = []
    for namespace in wanted:
        current = found.get(_generation_key(namespace))
        if current is None:
            # First reader (or the token was evicted): a fresh random token can never equal an
            # old one, so entries stored under an earlier generation are never read again.
            cache.add(_generation_key(namespace), uuid.uuid4().hex, timeout=GENERATION_TIMEOUT)
            current = cache.get(_generation_key(namespace))
        generations[namespace] = current
        if current != guesses[namespace]:
            moved.append(namespace)
            _seen[namespace] = current
    if moved:
        found.update(
            cache.get_many(
                [_value_key(ns, generations[ns], key) for ns in moved for key in wanted[ns]]
            )
        )
    return generations, found


def read(
    requests: dict[str, Iterable[str]], load: Callable[[str, list[str]], dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    """Values of `keys` for each namespace, from the cache or `load(namespace, missing_keys)`.

    `requests` maps namespace -> keys; the result maps namespace -> {key: value} for the keys
    that exist.
    """
    wanted = {namespace: list(dict.fromkeys(keys)) for namespace, keys in requests.items()}
    try:
        generations, found = _fetch(wanted)
    except Exception:
        logger.warning("config cache unavailable; reading the database", exc_info=True)
        return {namespace: load(namespace, keys) for namespace, keys in wanted.items()}

    result: dict[str, dict[str, Any]] = {namespace: {} for namespace in wanted}
    missing: dict[str, list[str]] = {}
    for namespace, keys in wanted.items():
        for key in keys:
            cached = found.get(_value_key(namespace, generations[namespace], key))
            if cached is None:
                missing.setdefault(namespace, []).append(key)
            elif cached != _ABSENT:
                result[namespace][key] = cached[1]
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
        cache.set(_generation_key(namespace), uuid.uuid4().hex, timeout=GENERATION_TIMEOUT)
    except Exception:
        # Readers then serve cached values until they expire (TIMEOUT).
        logger.error("could not invalidate the config cache of %s", namespace, exc_info=True)

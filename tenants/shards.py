"""The shard map: which PostgreSQL database holds which organizations, and placement on it.

Each shard is a Django database alias named after it (`default` is DATABASE_URL's database, in
DEFAULT_REGION; the others are rows of `tenants.Shard` in `default`'s public schema). The map is
read once per process and kept; adding a shard drops it in every process (tenants.invalidation),
and a new shard's connection settings are added to `django.db.connections` when first needed, so
no process needs a restart or a settings change. `tenants.context` picks the alias.

Placement is weighted rendezvous hashing (highest random weight): every shard allowed for the
organization scores `-weight / ln(h)` with `h` a hash of (organization, shard) in (0, 1), and the
highest score wins. Adding a shard changes the winner only for the organizations it wins (about
its share of the weight), and placement never moves anybody by itself: only new organizations
and `rebalance` use it.
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import dj_database_url
from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections

from tenants import invalidation

if TYPE_CHECKING:
    from tenants.models import Tenant

DEFAULT = DEFAULT_DB_ALIAS
INVALIDATION_TOPIC = "shard-map"
MAX_AGE_SECONDS = 300.0
DEFAULT_WEIGHT = 100


class NoShardAvailable(Exception):
    """No shard is in any of the regions the organization's data may live in."""

    def __init__(self, regions: Iterable[str]) -> None:
        self.regions = sorted(regions)
        super().__init__(
            "No database shard serves the region(s) this organization's data may live in: "
            + ", ".join(self.regions)
        )


class UnknownShard(LookupError):
    pass


@dataclass(frozen=True)
class ShardInfo:
    name: str
    region: str
    weight: int
    url: str
    # Regions whose organizations it may hold besides its own: only `default` has any
    # (settings.DEFAULT_SHARD_REGIONS, for a deployment with one database; docs/scaling.md).
    extra_regions: frozenset[str] = frozenset()

    @property
    def regions(self) -> frozenset[str]:
        return self.extra_regions | {self.region}

    def region_for(self, home_region: str) -> str:
        """The region it holds an organization of `home_region` in."""
        return home_region if home_region in self.regions else self.region

    @property
    def alias(self) -> str:
        return self.name

    @property
    def display_url(self) -> str:
        """The URL without a password, for people and logs."""
        return redact(self.url)


def redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    userinfo = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{userinfo}:***@{netloc[-1]}"))


_cache: tuple[float, dict[str, ShardInfo]] | None = None
_lock = threading.Lock()


def _default_shard() -> ShardInfo:
    return ShardInfo(
        name=DEFAULT,
        region=settings.DEFAULT_REGION,
        weight=settings.DEFAULT_SHARD_WEIGHT,
        url=settings.DATABASE_URL,
        extra_regions=frozenset(settings.DEFAULT_SHARD_REGIONS),
    )


def _load() -> dict[str, ShardInfo]:
    """Read the map from `default`'s public schema, whatever the calling context points at."""
    from tenants import context, guard

    with guard.dangerously_unguarded(), context.directory_cursor() as cursor:
        cursor.execute("SELECT name, region, weight, url FROM public.tenants_shard ORDER BY name")
        rows = cursor.fetchall()
    return {
        name: ShardInfo(name=name, region=region, weight=weight, url=url)
        for name, region, weight, url in rows
    }


def all_shards() -> dict[str, ShardInfo]:
    """The map, by name (`default` first, from settings; the others cached per process)."""
    global _cache
    invalidation.ensure_listening()
    entry = _cache
    now = time.monotonic()
    if entry is None or now - entry[0] >= MAX_AGE_SECONDS:
        entry = (now, _load())
        with _lock:
            _cache = entry
    return {DEFAULT: _default_shard(), **entry[1]}


def get(name: str) -> ShardInfo:
    if name == DEFAULT:
        return _default_shard()
    found = all_shards()
    if name not in found:
        clear()  # added since this process last read the map
        found = all_shards()
    try:
        return found[name]
    except KeyError:
        raise UnknownShard(name) from None


def alias_for(name: str) -> str:
    """The database alias of shard `name`, its connection settings added on first use."""
    if name == DEFAULT:
        return DEFAULT
    if name not in connections.settings:
        register_connection(get(name))
    return name


def register_connection(shard: ShardInfo) -> None:
    """Add the shard's database to django.db.connections (same options as `default`)."""
    base = connections.settings[DEFAULT]
    parsed = dj_database_url.parse(shard.url)
    config = {
        **base,
        **{k: parsed[k] for k in ("NAME", "USER", "PASSWORD", "HOST", "PORT") if k in parsed},
        "OPTIONS": {**base.get("OPTIONS", {}), **parsed.get("OPTIONS", {})},
        "TEST": {**base.get("TEST", {}), "NAME": parsed.get("NAME")},
    }
    with _lock:
        connections.settings.setdefault(shard.name, config)


def clear() -> None:
    global _cache
    with _lock:
        _cache = None


def clear_everywhere() -> None:
    invalidation.publish(INVALIDATION_TOPIC)


invalidation.register(INVALIDATION_TOPIC, clear)


def _score(key: str, shard: ShardInfo) -> float:
    digest = hashlib.sha256(f"{key}\x00{shard.name}".encode()).digest()
    # 53 bits into (0, 1): never 0 (log) nor 1 (division by zero).
    unit = (int.from_bytes(digest[:8], "big") >> 11) / float(1 << 53)
    unit = min(max(unit, 1e-12), 1.0 - 1e-12)
    return -shard.weight / math.log(unit)


def place(
    key: str,
    *,
    home_region: str,
    allowed_regions: Iterable[str],
    shards: Iterable[ShardInfo] | None = None,
) -> str:
    """The shard (name) an organization keyed `key` belongs on.

    Among the shards in its allowed regions, those in its home region if there are any (data
    stays close to its users), else all of them; the highest weighted rendezvous score wins.
    Raises NoShardAvailable when no shard is in any allowed region.
    """
    allowed = set(allowed_regions)
    candidates = [
        shard
        for shard in (all_shards().values() if shards is None else shards)
        if shard.regions & allowed
    ]
    if not candidates:
        raise NoShardAvailable(allowed)
    pool = [shard for shard in candidates if home_region in shard.regions] or candidates
    return max(pool, key=lambda shard: (_score(key, shard), shard.name)).name


def place_tenant(*, actor: Any, tenant: Tenant) -> str:
    """The shard for a new organization, within its residency policy (tenants.residency).

    No shard in any allowed region is a ValidationError on `region` (nothing recorded: it is a
    matter of capacity, not of the organization's rules); the chosen shard then passes the one
    placement check, which records and raises a refusal.
    """
    from django.core.exceptions import ValidationError

    from tenants import residency

    try:
        name = place(
            str(tenant.public_id),
            home_region=tenant.region,
            allowed_regions=residency.allowed_regions(tenant.residency_policy),
        )
    except NoShardAvailable as error:
        raise ValidationError({"region": [str(error)]}) from error
    chosen = get(name)
    region = tenant.region if tenant.region in chosen.regions else chosen.region
    if region not in residency.allowed_regions(tenant.residency_policy):
        region = sorted(chosen.regions & set(residency.allowed_regions(tenant.residency_policy)))[0]
    residency.check_placement(
        actor=actor,
        region=region,
        policy=tenant.residency_policy,
        purpose=residency.Purpose.SHARD,
        subject=name,
    )
    return name

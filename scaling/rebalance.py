"""Rebalancing: moves that even out load across shards, within each organization's regions.

An organization's load is half its share of the fleet's stored bytes and half its share of the
fleet's recent usage (instance-minutes its agents reported in the last day); a shard's fair share
is its weight over the total. `plan_moves` proposes moves greedily from the most loaded shard
(above its share) to the least loaded one the organization may live on, taking an organization
only when the move brings both shards closer to their share, until every shard is within
`tolerance` of it or nothing more helps. `manage.py rebalance` shows the plan; `--apply` runs the
moves one by one (scaling.moves), each safe to interrupt.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import timedelta

from django.db import connection
from django.utils import timezone

from core.actors import Actor
from gateway import selectors as gateway_selectors
from tenants import context, residency, shards
from tenants.models import Tenant, TenantStatus

USAGE_WINDOW = timedelta(days=1)


@dataclass(frozen=True)
class OrganizationLoad:
    slug: str
    shard: str
    home_region: str
    allowed_regions: frozenset[str]
    size_bytes: int
    usage: int
    load: float = 0.0


@dataclass(frozen=True)
class Move:
    slug: str
    source: str
    target: str
    load: float


def measure() -> list[OrganizationLoad]:
    """Every active organization's size and recent usage, read on its own shard."""
    since = timezone.now() - USAGE_WINDOW
    with context.public_context():
        tenants = list(
            Tenant.objects.select_related("plan")
            .filter(status=TenantStatus.ACTIVE)
            .order_by("slug")
        )
    found = []
    for tenant in tenants:
        with context.tenant_context(tenant), connection.cursor() as cursor:
            cursor.execute(
                "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = %s AND c.relkind = 'r'",
                [tenant.schema_name],
            )
            (size,) = cursor.fetchone()
            usage = gateway_selectors.instance_minutes_since(since)
        found.append(
            OrganizationLoad(
                slug=tenant.slug,
                shard=tenant.shard,
                home_region=tenant.region,
                allowed_regions=frozenset(residency.organization_regions(tenant)),
                size_bytes=int(size),
                usage=usage,
            )
        )
    return with_loads(found)


def with_loads(organizations: list[OrganizationLoad]) -> list[OrganizationLoad]:
    total_size = sum(org.size_bytes for org in organizations) or 1
    total_usage = sum(org.usage for org in organizations)
    result = []
    for org in organizations:
        load = org.size_bytes / total_size
        load = 0.5 * load + 0.5 * (org.usage / total_usage) if total_usage else load
        result.append(replace(org, load=load))
    return result


def plan_moves(
    organizations: list[OrganizationLoad],
    shard_map: dict[str, shards.ShardInfo],
    *,
    tolerance: float = 0.05,
    max_moves: int = 50,
) -> list[Move]:
    total_weight = sum(shard.weight for shard in shard_map.values())
    share = {name: shard.weight / total_weight for name, shard in shard_map.items()}
    load = {name: 0.0 for name in shard_map}
    where = {org.slug: org.shard for org in organizations}
    for org in organizations:
        load[org.shard] = load.get(org.shard, 0.0) + org.load
    moves: list[Move] = []
    while len(moves) < max_moves:
        excess = {name: load[name] - share.get(name, 0.0) for name in load}
        if max(abs(value) for value in excess.values()) <= tolerance:
            break
        best = None
        for source in sorted(excess, key=excess.get, reverse=True):
            if excess[source] <= tolerance:
                break
            candidates = sorted(
                (org for org in organizations if where[org.slug] == source),
                key=lambda org: org.load,
                reverse=True,
            )
            for org in candidates:
                targets = [
                    name
                    for name, shard in shard_map.items()
                    if name != source
                    and shard.region_for(org.home_region) in org.allowed_regions
                    and excess[name] < 0
                ]
                # Both shards must end closer to their share than they were.
                targets = [
                    name
                    for name in targets
                    if abs(excess[source] - org.load) < abs(excess[source])
                    and abs(excess[name] + org.load) < abs(excess[name])
                ]
                if targets:
                    best = (org, source, min(targets, key=excess.get))
                    break
            if best is not None:
                break
        if best is None:
            break
        org, source, target = best
        moves.append(Move(slug=org.slug, source=source, target=target, load=org.load))
        where[org.slug] = target
        load[source] -= org.load
        load[target] += org.load
    return moves


def apply(
    moves: list[Move], *, actor: Actor, progress: Callable[[int, Move, str], None]
) -> list[tuple[Move, Exception]]:
    """Run the moves one by one; a failed move (it stays where it was) does not stop the others.
    `progress(index, move, state)` with state "moving", "moved" or "failed: ..."."""
    from scaling.moves import tenant_move

    failures = []
    for index, move in enumerate(moves, start=1):
        progress(index, move, "moving")
        try:
            tenant_move(actor=actor, slug=move.slug, to=move.target)
        except Exception as error:
            failures.append((move, error))
            progress(index, move, f"failed: {type(error).__name__}: {error}")
            continue
        progress(index, move, "moved")
    return failures

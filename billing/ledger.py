"""The one usage ledger: hourly counters in Redis on the request path, rolled up into PostgreSQL.

Keys (all under the organization's public id):
  agentplane:usage:<org>:<YYYYMMDDHH>          hash, field "<meter>\\t<groups json>" -> value
  agentplane:usage:<org>:<YYYYMMDDHH>:flush    the same hash while a rollup moves it
  agentplane:usage:<org>:hours                 set of hours with a hash (reports read these)
  agentplane:usage:pending                     set of "<org>:<hour>" with a hash (the rollup's)
  agentplane:usage:event:<org>:<source>:<id>   a reported event seen (de-duplication)

The request path adds to the hash in the same Lua call as its rate limits (tenants.ratelimit).
The rollup renames a hash (atomically with dropping it from the pending set, so any later count
starts a new hash), adds it to `UsageBucket` in one transaction with a `RollupBatch` row naming
the hash's generation, then deletes it: run twice, or interrupted, it never adds a count twice.
Reports read PostgreSQL plus the hashes not yet rolled up, so the current hour is live.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from billing.models import Aggregation, RollupBatch
from tenants import context, ratelimit

logger = logging.getLogger(__name__)

PREFIX = "agentplane:usage"
PENDING = f"{PREFIX}:pending"
GENERATION_FIELD = "\x00generation"
HOUR_FORMAT = "%Y%m%d%H"


@dataclass(frozen=True)
class BuiltinMeter:
    slug: str
    name: str
    unit: str
    aggregation: str
    group_keys: tuple[str, ...]


BUILTIN_METERS: dict[str, BuiltinMeter] = {
    meter.slug: meter
    for meter in (
        BuiltinMeter("api_requests", "API requests", "requests", "COUNT", ("api_key",)),
        BuiltinMeter("gateway_messages", "Gateway messages", "messages", "COUNT", ("agent",)),
        BuiltinMeter("tasks", "Tasks", "tasks", "COUNT", ("api_key",)),
        BuiltinMeter("llm_tokens", "LLM tokens", "tokens", "SUM", ("model", "direction")),
        BuiltinMeter("usage_events", "Reported usage events", "events", "COUNT", ("type",)),
        BuiltinMeter("tool_runs", "Custom tool runs", "runs", "COUNT", ("tool",)),
        BuiltinMeter("tool_cpu_ms", "Custom tool CPU time", "ms", "SUM", ("tool",)),
    )
}


def hour_of(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def hour_label(moment: datetime) -> str:
    return hour_of(moment).strftime(HOUR_FORMAT)


def hour_number(moment: datetime) -> int:
    """The UTC hour of `moment` as a number (hours since the epoch): cheaper than its label."""
    return int(moment.timestamp()) // 3600


def parse_hour(label: str) -> datetime:
    return datetime.strptime(label, HOUR_FORMAT).replace(tzinfo=UTC)


def hash_key(org: str, hour: str) -> str:
    return f"{PREFIX}:{org}:{hour}"


def hours_key(org: str) -> str:
    return f"{PREFIX}:{org}:hours"


def event_key(org: str, source: str, event_id: str) -> str:
    return f"{PREFIX}:event:{org}:{len(source)}:{source}:{event_id}"


def field_of(meter: str, groups: dict[str, str] | None) -> str:
    return f"{meter}\t{json.dumps(groups or {}, sort_keys=True, separators=(',', ':'))}"


def parse_field(name: str) -> tuple[str, dict[str, str]]:
    meter, _, groups = name.partition("\t")
    return meter, json.loads(groups or "{}")


@dataclass(frozen=True)
class Count:
    """One increment of the ledger: `amount` of `meter` for `groups` in the hour of `at`."""

    meter: str
    amount: int
    groups: dict[str, str] | None = None
    at: datetime | None = None
    op: str = "sum"  # "max" for MAX meters, "unique" for UNIQUE_COUNT meters
    dedup_key: str | None = None
    member: str = ""  # the distinct value a UNIQUE_COUNT meter counts


def counts_signature(counts: Iterable[Count]) -> tuple[Any, ...]:
    """What makes two lists of counts charge the same (within one hour): a cache key."""
    return tuple(
        (
            count.meter,
            count.amount,
            count.op,
            count.dedup_key,
            count.at,
            count.member,
            tuple(count.groups.items()) if count.groups else (),
        )
        for count in counts
    )


def charges(org: str, counts: Iterable[Count], now: datetime) -> tuple[list, list]:
    """The Lua call's charges and index-set entries for `counts`."""
    charge_list = []
    hours = set()
    for count in counts:
        hour = hour_label(count.at or now)
        hours.add(hour)
        charge_list.append(
            ratelimit.Charge(
                hash_key=hash_key(org, hour),
                field=field_of(count.meter, count.groups),
                amount=count.amount,
                op=count.op,
                dedup_key=count.dedup_key,
                member=count.member,
            )
        )
    index_sets = []
    for hour in sorted(hours):
        index_sets += [(hours_key(org), hour), (PENDING, f"{org}:{hour}")]
    return charge_list, index_sets


# Writing to PostgreSQL (the rollup, and fail-open requests while Redis is unreachable) ----------

_INSERT = (
    "INSERT INTO public.billing_usagebucket (tenant_id, meter, hour, groups, value) "
    "SELECT * FROM unnest(%s::bigint[], %s::varchar[], %s::timestamptz[], %s::jsonb[], "
    "%s::bigint[]) ON CONFLICT (tenant_id, meter, hour, groups) DO UPDATE SET "
)
_UPSERT = {
    "sum": _INSERT + "value = billing_usagebucket.value + EXCLUDED.value",
    "max": _INSERT + "value = GREATEST(billing_usagebucket.value, EXCLUDED.value)",
}


def add_rows(rows: list[tuple[int, str, datetime, str, int]], op: str) -> None:
    """Add (tenant id, meter, hour, groups json, value) rows to the buckets, in one statement."""
    if not rows:
        return
    tenants, meters, hours, groups, values = (list(column) for column in zip(*rows, strict=True))
    with connection.cursor() as cursor:
        cursor.execute(_UPSERT[op], [tenants, meters, hours, groups, values])


def add_directly(tenant_id: int, counts: Iterable[Count], now: datetime) -> None:
    """Fail open with nothing lost: add `counts` straight to PostgreSQL (Redis unreachable)."""
    by_op: dict[str, dict[tuple, int]] = defaultdict(dict)
    for count in counts:
        key = (
            tenant_id,
            count.meter,
            hour_of(count.at or now),
            json.dumps(count.groups or {}, sort_keys=True),
        )
        table = by_op[count.op]
        if count.op == "max":
            table[key] = max(table.get(key, count.amount), count.amount)
        else:
            table[key] = table.get(key, 0) + count.amount
    with context.public_context(), transaction.atomic():
        for op, table in by_op.items():
            add_rows([(*key, value) for key, value in table.items()], op)


# Reading the live hours -----------------------------------------------------------------------


def live_hashes(org: str, start: datetime, end: datetime) -> dict[datetime, dict[str, int]]:
    """The hours in [start, end) still counted in Redis (or memory), field -> value."""
    client = ratelimit.redis_client()
    if client is None:
        hours = ratelimit.memory_members(hours_key(org))
    else:
        hours = {h.decode() for h in client.smembers(hours_key(org))}
    wanted = sorted(h for h in hours if start <= parse_hour(h) < end)
    if not wanted:
        return {}
    keys = []
    for hour in wanted:
        keys += [hash_key(org, hour), f"{hash_key(org, hour)}:flush"]
    if client is None:
        replies = [ratelimit.memory_hash(key) for key in keys]
    else:
        pipe = client.pipeline(transaction=False)
        for key in keys:
            pipe.hgetall(key)
        replies = [
            {k.decode(): int(v) for k, v in reply.items() if k != GENERATION_FIELD.encode()}
            for reply in pipe.execute()
        ]
    result: dict[datetime, dict[str, int]] = {}
    for index, hour in enumerate(wanted):
        merged: dict[str, int] = {}
        for reply in (replies[2 * index], replies[2 * index + 1]):
            for name, value in reply.items():
                if name == GENERATION_FIELD:
                    continue
                merged[name] = merged.get(name, 0) + int(value)
        if merged:
            result[parse_hour(hour)] = merged
    return result


# The rollup ---------------------------------------------------------------------------------------

# Move a hash aside for the rollup, with a new generation id (unless a previous, interrupted
# rollup left one there: then that one, with its generation, is rolled up again).
_DETACH = """
local flush = KEYS[1] .. ':flush'
if redis.call('EXISTS', flush) == 0 and redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('RENAME', KEYS[1], flush)
  redis.call('HSET', flush, ARGV[1], ARGV[2])
  redis.call('PERSIST', flush)
end
if redis.call('EXISTS', flush) == 1 then
  return redis.call('HGETALL', flush)
end
return {}
"""
# After the commit: drop the moved hash, and the hour from both indexes unless a new hash was
# started meanwhile (a count after this step adds the hour again).
_FINISH = """
redis.call('DEL', KEYS[1] .. ':flush')
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('SREM', KEYS[2], ARGV[1])
  redis.call('SREM', KEYS[3], ARGV[2])
end
return 1
"""


@dataclass
class RollupResult:
    hashes: int = 0
    counters: int = 0
    skipped: int = 0  # hashes an interrupted rollup had already added


def _meter_ops(tenant_ids: set[int]) -> dict[tuple[int, str], str]:
    """Which custom meters take maxima (everything else adds)."""
    from billing.models import Meter

    return {
        (meter.tenant_id, meter.slug): "max"
        for meter in Meter.objects.filter(
            tenant_id__in=tenant_ids, aggregation=Aggregation.MAX
        ).only("tenant_id", "slug")
    }


def rollup(*, include_current: bool = False, batch_size: int = 500) -> RollupResult:
    """Move counted hours from Redis into `UsageBucket`, `batch_size` hashes per transaction.

    Closed hours only, unless `include_current` (the periodic flush: then at most the flush
    interval of counts lives only in Redis).
    """
    from tenants.models import Tenant

    result = RollupResult()
    current = hour_label(timezone.now())
    client = ratelimit.redis_client()
    members = (
        {m.decode() for m in client.smembers(PENDING)}
        if client is not None
        else ratelimit.memory_members(PENDING)
    )
    due = sorted(m for m in members if include_current or m.rsplit(":", 1)[1] < current)
    if client is not None:
        detach, finish = client.register_script(_DETACH), client.register_script(_FINISH)
    for start in range(0, len(due), batch_size):
        batch = due[start : start + batch_size]
        detached: list[tuple[str, str, dict[str, int], str]] = []
        if client is not None:
            pipe = client.pipeline(transaction=False)
            for member in batch:
                org, hour = member.rsplit(":", 1)
                detach(
                    keys=[hash_key(org, hour)],
                    args=[GENERATION_FIELD, uuid.uuid4().hex],
                    client=pipe,
                )
            for member, reply in zip(batch, pipe.execute(), strict=True):
                org, hour = member.rsplit(":", 1)
                pairs = dict(zip(reply[::2], reply[1::2], strict=True))
                generation = pairs.pop(GENERATION_FIELD.encode(), b"").decode()
                values = {k.decode(): int(v) for k, v in pairs.items()}
                if values:
                    detached.append((org, hour, values, generation))
        else:
            for member in batch:
                org, hour = member.rsplit(":", 1)
                ratelimit.memory_members(PENDING)  # expiry check
                values = ratelimit.memory_pop(hash_key(org, hour)) or {}
                _discard_member(PENDING, member)
                if values:
                    detached.append((org, hour, dict(values), uuid.uuid4().hex))
        if not detached:
            continue
        orgs = {org for org, *_ in detached}
        tenant_ids = dict(Tenant.objects.filter(public_id__in=orgs).values_list("public_id", "pk"))
        tenant_ids = {str(k): v for k, v in tenant_ids.items()}
        ops = _meter_ops(set(tenant_ids.values()))
        done = set(
            RollupBatch.objects.filter(generation__in=[g for *_, g in detached]).values_list(
                "generation", flat=True
            )
        )
        rows: dict[str, list] = {"sum": [], "max": []}
        for org, hour, values, generation in detached:
            if generation in done or org not in tenant_ids:
                result.skipped += 1
                continue
            tenant_id = tenant_ids[org]
            moment = parse_hour(hour)
            for name, value in values.items():
                # The field's groups are JSON already (field_of): PostgreSQL parses them as jsonb.
                meter, _, groups = name.partition("\t")
                op = ops.get((tenant_id, meter), "sum") if ops else "sum"
                rows[op].append((tenant_id, meter, moment, groups or "{}", value))
                result.counters += 1
            result.hashes += 1
        with transaction.atomic():
            add_rows(rows["sum"], "sum")
            add_rows(rows["max"], "max")
            RollupBatch.objects.bulk_create(
                [RollupBatch(generation=g) for *_, g in detached if g not in done],
                ignore_conflicts=True,
            )
        if client is not None:
            pipe = client.pipeline(transaction=False)
            for org, hour, _, _ in detached:
                finish(
                    keys=[hash_key(org, hour), hours_key(org), PENDING],
                    args=[hour, f"{org}:{hour}"],
                    client=pipe,
                )
            pipe.execute()
        else:
            for org, hour, _, _ in detached:
                if not ratelimit.memory_hash(hash_key(org, hour)):
                    _discard_member(hours_key(org), hour)
    RollupBatch.objects.filter(
        rolled_up_at__lt=timezone.now() - timedelta(seconds=settings.BILLING_REDIS_TTL_SECONDS * 2)
    ).delete()
    return result


def _discard_member(key: str, member: str) -> None:
    members = ratelimit.memory_members(key)
    members.discard(member)
    ratelimit.memory_set(key, members, 86400 * 30, only_if_missing=False)


def pending_members() -> Iterator[str]:
    client = ratelimit.redis_client()
    if client is None:
        yield from ratelimit.memory_members(PENDING)
    else:
        for member in client.smembers(PENDING):
            yield member.decode()

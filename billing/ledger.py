"""The one usage ledger: hourly counters in Redis on the request path, rolled up into PostgreSQL.

Keys (all under the organization's public id):
  agentplane:usage:<org>:<YYYYMMDDHH>          hash, field "<meter>\\t<groups json>" -> value
  agentplane:usage:<org>:<YYYYMMDDHH>:distinct set of "<meter>\t<groups json>\t<value>": the
                                               distinct values of UNIQUE_COUNT meters
  agentplane:usage:<org>:<YYYYMMDDHH>:flush    the hash while a rollup moves it (and
                                               `...:flush:distinct`, its set)
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
        BuiltinMeter(
            "gateway_messages", "Gateway messages", "messages", "COUNT", ("agent", "api_key")
        ),
        BuiltinMeter("tasks", "Tasks", "tasks", "COUNT", ("api_key",)),
        BuiltinMeter(
            "llm_tokens", "LLM tokens", "tokens", "SUM", ("model", "direction", "api_key", "agent")
        ),
        BuiltinMeter("usage_events", "Reported usage events", "events", "COUNT", ("type",)),
        BuiltinMeter("tool_runs", "Custom tool runs", "runs", "COUNT", ("tool",)),
        BuiltinMeter("tool_cpu_ms", "Custom tool CPU time", "ms", "SUM", ("tool",)),
        BuiltinMeter("instance_seconds", "Instance time", "seconds", "SUM", ("agent",)),
    )
}


# The ledger's operation per aggregation (SUM and COUNT add).
OPS = {Aggregation.MAX: "max", Aggregation.UNIQUE_COUNT: "unique"}


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

# Every write of the buckets holds this transaction lock, so that the merge below (update what
# exists, insert the rest) never races another writer into a unique violation.
LEDGER_LOCK = 0x6C656467  # "ledg"
_STAGE = (
    "CREATE TEMP TABLE billing_ledger_stage (tenant_id bigint, meter varchar(40), groups jsonb, "
    "hour timestamptz, value bigint, is_max boolean) ON COMMIT DROP"
)
# One UPDATE of the rows that exist (bounded to the batch's organizations, meters and hours, so
# that it probes the unique index instead of scanning the table), then one plain INSERT of the
# others: an INSERT ... ON CONFLICT of the whole batch costs about four times as much.
_MERGE = """
WITH updated AS (
  UPDATE public.billing_usagebucket b
  SET value = CASE WHEN s.is_max THEN GREATEST(b.value, s.value) ELSE b.value + s.value END
  FROM billing_ledger_stage s
  WHERE b.tenant_id = ANY(%s) AND b.meter = ANY(%s) AND b.hour BETWEEN %s AND %s
    AND b.tenant_id = s.tenant_id AND b.meter = s.meter AND b.hour = s.hour
    AND b.groups = s.groups
  RETURNING s.tenant_id, s.meter, s.hour, s.groups
)
INSERT INTO public.billing_usagebucket (tenant_id, meter, hour, groups, value)
SELECT s.tenant_id, s.meter, s.hour, s.groups, s.value FROM billing_ledger_stage s
WHERE NOT EXISTS (
  SELECT 1 FROM updated u WHERE u.tenant_id = s.tenant_id AND u.meter = s.meter
    AND u.hour = s.hour AND u.groups = s.groups
)
"""
_DISTINCT_STAGE = (
    "CREATE TEMP TABLE billing_distinct_stage (tenant_id bigint, meter varchar(40), "
    "groups jsonb, hour timestamptz, value varchar(128)) ON COMMIT DROP"
)
_DISTINCT_MERGE = (
    "INSERT INTO public.billing_usagedistinct (tenant_id, meter, hour, groups, value) "
    "SELECT DISTINCT tenant_id, meter, hour, groups, value FROM billing_distinct_stage "
    "ON CONFLICT DO NOTHING"
)


def _copy_text(value: str) -> str:
    """A value in COPY's text format (JSON never holds a raw tab or newline; only backslashes
    need escaping)."""
    return value.replace("\\", "\\\\") if "\\" in value else value


@dataclass
class Batch:
    """Rows to merge into the ledger in one transaction: COPY lines and their bounds."""

    lines: list[str]
    distinct_lines: list[str]
    tenants: set[int]
    meters: set[str]
    first: datetime | None = None
    last: datetime | None = None

    def span(self, tenant_id: int, meters: Iterable[str], hour: datetime) -> None:
        self.tenants.add(tenant_id)
        self.meters.update(meters)
        if self.first is None or hour < self.first:
            self.first = hour
        if self.last is None or hour > self.last:
            self.last = hour


def new_batch() -> Batch:
    return Batch([], [], set(), set())


def merge(batch: Batch) -> None:
    """Add a batch to `UsageBucket` (sums add, maxima take the greater) and its distinct values
    to `UsageDistinct`: COPY into a staging table, then one merge."""
    if not batch.lines and not batch.distinct_lines:
        return
    # Its own transaction when the caller has none: the staging tables, the lock and the setting
    # live until its end.
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [LEDGER_LOCK])
        cursor.execute("SET LOCAL jit = off")  # compiling the merge costs more than it saves
        if batch.lines:
            cursor.execute(_STAGE)
            with cursor.copy(
                "COPY billing_ledger_stage (tenant_id, meter, groups, hour, value, is_max) "
                "FROM STDIN"
            ) as copy:
                copy.write("".join(batch.lines))
            cursor.execute(
                _MERGE, [sorted(batch.tenants), sorted(batch.meters), batch.first, batch.last]
            )
            cursor.execute("DROP TABLE billing_ledger_stage")
        if batch.distinct_lines:
            cursor.execute(_DISTINCT_STAGE)
            with cursor.copy(
                "COPY billing_distinct_stage (tenant_id, meter, groups, hour, value) FROM STDIN"
            ) as copy:
                copy.write("".join(batch.distinct_lines))
            cursor.execute(_DISTINCT_MERGE)
            cursor.execute("DROP TABLE billing_distinct_stage")


def add_counters(
    batch: Batch, tenant_id: int, hour: datetime, pairs: list, ops: dict[str, str]
) -> int:
    """One organization's counters of one hour into `batch`: `pairs` is [field, value, ...] as
    a hash holds them (fields as field_of makes them), `ops` the meters that do not add ("max",
    or "unique": those come from their distinct values). Returns how many were added."""
    hour_text = hour.isoformat()
    meters = set()
    lines = batch.lines
    added = 0
    for index in range(0, len(pairs), 2):
        meter, _, groups = pairs[index].partition("\t")
        op = ops.get(meter, "sum") if ops else "sum"
        if op == "unique":
            continue
        meters.add(meter)
        lines.append(
            f"{tenant_id}\t{meter}\t{_copy_text(groups or '{}')}\t{hour_text}\t"
            f"{pairs[index + 1]}\t{'t' if op == 'max' else 'f'}\n"
        )
        added += 1
    batch.span(tenant_id, meters, hour)
    return added


def add_distinct(batch: Batch, tenant_id: int, member: str, hour: datetime) -> None:
    """One distinct value (`<meter>\\t<groups json>\\t<value>`) into `batch`."""
    meter, _, rest = member.partition("\t")
    groups, _, value = rest.partition("\t")
    batch.distinct_lines.append(
        f"{tenant_id}\t{meter}\t{_copy_text(groups or '{}')}\t{hour.isoformat()}\t"
        f"{_copy_text(value)}\n"
    )


def add_rows(rows: list[tuple[int, str, datetime, str, int]], op: str) -> None:
    """Add (tenant id, meter, hour, groups json, value) rows to the buckets (op "sum" or "max")."""
    batch = new_batch()
    for tenant_id, meter, hour, groups, value in rows:
        add_counters(batch, tenant_id, hour, [f"{meter}\t{groups}", value], {meter: op})
    merge(batch)


def add_directly(tenant_id: int, counts: Iterable[Count], now: datetime) -> None:
    """Fail open with nothing lost: add `counts` straight to PostgreSQL (Redis unreachable)."""
    by_key: dict[tuple[str, datetime], tuple[str, int]] = {}
    batch = new_batch()
    for count in counts:
        hour = hour_of(count.at or now)
        field = field_of(count.meter, count.groups)
        if count.op == "unique":
            add_distinct(batch, tenant_id, f"{field}\t{count.member}", hour)
            continue
        op, value = by_key.get((field, hour), (count.op, 0 if count.op == "sum" else count.amount))
        by_key[(field, hour)] = (
            op,
            max(value, count.amount) if op == "max" else value + count.amount,
        )
    for (field, hour), (op, value) in by_key.items():
        add_counters(batch, tenant_id, hour, [field, value], {field.partition("\t")[0]: op})
    with context.public_context(), transaction.atomic():
        merge(batch)


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


def live_distinct(org: str, meter: str, start: datetime, end: datetime) -> list[tuple]:
    """The distinct values of a UNIQUE_COUNT meter in the hours of [start, end) still in Redis
    (or memory): (hour, groups json, value), each once per hour and groups."""
    client = ratelimit.redis_client()
    if client is None:
        hours = ratelimit.memory_members(hours_key(org))
    else:
        hours = {h.decode() for h in client.smembers(hours_key(org))}
    prefix = f"{meter}\t"
    found = set()
    for hour in sorted(h for h in hours if start <= parse_hour(h) < end):
        moment = parse_hour(hour)
        for key in (f"{hash_key(org, hour)}:distinct", f"{hash_key(org, hour)}:flush:distinct"):
            if client is None:
                members = [m for m in ratelimit.memory_members(key) if m.startswith(prefix)]
            else:
                members = [m.decode() for m in client.sscan_iter(key, match=f"{meter}\t*")]
            for member in members:
                groups, _, value = member[len(prefix) :].partition("\t")
                found.add((moment, groups, value))
    return sorted(found)


# The rollup ---------------------------------------------------------------------------------------

# Move a hash (and its set of distinct values) aside for the rollup, with a new generation id
# (unless a previous, interrupted rollup left one there: then that one, with its generation, is
# rolled up again). The reply is JSON (one string each for the hash and the set): redis-py takes
# far longer to parse a thousand-field reply than Lua's cjson to write it.
_DETACH = """
local flush = KEYS[1] .. ':flush'
if redis.call('EXISTS', flush) == 0 and redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('RENAME', KEYS[1], flush)
  redis.call('HSET', flush, ARGV[1], ARGV[2])
  redis.call('PERSIST', flush)
  if redis.call('EXISTS', KEYS[1] .. ':distinct') == 1 then
    redis.call('RENAME', KEYS[1] .. ':distinct', flush .. ':distinct')
    redis.call('PERSIST', flush .. ':distinct')
  end
end
if redis.call('EXISTS', flush) == 1 then
  return {cjson.encode(redis.call('HGETALL', flush)),
          cjson.encode(redis.call('SMEMBERS', flush .. ':distinct'))}
end
return {}
"""
# After the commit: drop the moved hash and set, and the hour from both indexes unless a new
# hash was started meanwhile (a count after this step adds the hour again).
_FINISH = """
redis.call('DEL', KEYS[1] .. ':flush', KEYS[1] .. ':flush:distinct')
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
    distinct_values: int = 0
    skipped: int = 0  # hashes an interrupted rollup had already added


def _meter_ops(tenant_ids: set[int]) -> dict[tuple[int, str], str]:
    """Which custom meters take maxima or count distinct values (everything else adds)."""
    from billing.models import Meter

    return {
        (meter.tenant_id, meter.slug): OPS[meter.aggregation]
        for meter in Meter.objects.filter(tenant_id__in=tenant_ids, aggregation__in=OPS).only(
            "tenant_id", "slug", "aggregation"
        )
    }


def _json_list(reply: bytes | str) -> list[str]:
    value = json.loads(reply)
    return value if isinstance(value, list) else []  # cjson writes an empty list as {}


def rollup(*, include_current: bool = False, batch_size: int = 500) -> RollupResult:
    """Move counted hours from Redis into `UsageBucket` (and UNIQUE_COUNT meters' values into
    `UsageDistinct`), `batch_size` hashes per transaction.

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
        # (org, hour, [field, value, field, value ...], distinct members, generation)
        detached: list[tuple[str, str, list, list[str], str]] = []
        if client is not None:
            pipe = client.pipeline(transaction=False)
            for member in due[start : start + batch_size]:
                org, hour = member.rsplit(":", 1)
                detach(
                    keys=[hash_key(org, hour)],
                    args=[GENERATION_FIELD, uuid.uuid4().hex],
                    client=pipe,
                )
            for member, reply in zip(due[start : start + batch_size], pipe.execute(), strict=True):
                if not reply:
                    continue
                org, hour = member.rsplit(":", 1)
                pairs = _json_list(reply[0])
                generation = ""
                if GENERATION_FIELD in pairs[::2]:
                    at = pairs[::2].index(GENERATION_FIELD) * 2
                    generation = pairs[at + 1]
                    del pairs[at : at + 2]
                if pairs:
                    detached.append((org, hour, pairs, _json_list(reply[1]), generation))
        else:
            for member in due[start : start + batch_size]:
                org, hour = member.rsplit(":", 1)
                values = ratelimit.memory_pop(hash_key(org, hour)) or {}
                distinct = ratelimit.memory_pop(f"{hash_key(org, hour)}:distinct") or set()
                _discard_member(PENDING, member)
                if values:
                    pairs = [item for pair in values.items() for item in pair]
                    detached.append((org, hour, pairs, sorted(distinct), uuid.uuid4().hex))
        if not detached:
            continue
        orgs = {org for org, *_ in detached}
        tenant_ids = dict(Tenant.objects.filter(public_id__in=orgs).values_list("public_id", "pk"))
        tenant_ids = {str(k): v for k, v in tenant_ids.items()}
        ops: dict[int, dict[str, str]] = {}
        for (tenant_id, slug), op in _meter_ops(set(tenant_ids.values())).items():
            ops.setdefault(tenant_id, {})[slug] = op
        done = set(
            RollupBatch.objects.filter(generation__in=[g for *_, g in detached]).values_list(
                "generation", flat=True
            )
        )
        batch = new_batch()
        for org, hour, pairs, distinct, generation in detached:
            if generation in done or org not in tenant_ids:
                result.skipped += 1
                continue
            tenant_id = tenant_ids[org]
            moment = parse_hour(hour)
            result.counters += add_counters(batch, tenant_id, moment, pairs, ops.get(tenant_id, {}))
            for member in distinct:
                add_distinct(batch, tenant_id, member, moment)
            result.distinct_values += len(distinct)
            result.hashes += 1
        with transaction.atomic():
            merge(batch)
            RollupBatch.objects.bulk_create(
                [RollupBatch(generation=g) for *_, g in detached if g not in done],
                ignore_conflicts=True,
            )
        if client is not None:
            pipe = client.pipeline(transaction=False)
            for org, hour, *_ in detached:
                finish(
                    keys=[hash_key(org, hour), hours_key(org), PENDING],
                    args=[hour, f"{org}:{hour}"],
                    client=pipe,
                )
            pipe.execute()
        else:
            for org, hour, *_ in detached:
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

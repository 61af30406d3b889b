"""Rate limits whose keys always carry the organization, exact under concurrency, in one round trip.

One Lua script (`consume`) checks every limit of a request, then counts it: fixed windows (INCR,
PEXPIRE set once when the window's key is created, so a window never loses its count at its
edge), monthly quotas (refused when `amount` would pass the limit), and hashes of counters that
billing's usage ledger adds to, with optional de-duplication keys (reported events counted once).
It is atomic in Redis, so N allowed means N across every process, and it costs one EVALSHA.

"Unavailable" means Redis could not be reached (connection refused, timed out): then a fail-closed
limit refuses (`RateLimiterUnavailable`, a 503) and a fail-open one lets the request through with
a warning. Any other Redis error is a bug and propagates. Without a Redis server configured
(development, one process) the same semantics run in memory.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings

from core.errors import RateLimited, RateLimiterUnavailable
from tenants import context

logger = logging.getLogger(__name__)

__all__ = [
    "Charge",
    "Outcome",
    "Prepared",
    "Quota",
    "RateLimited",
    "RateLimiterUnavailable",
    "Sent",
    "Unreachable",
    "Usage",
    "Window",
    "consume",
    "hit",
    "parse_rate",
    "redis_client",
    "run",
    "run_async",
    "send",
    "tightest",
]

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
RATE_PATTERN = re.compile(r"^(\d+)/(\d*)([smhd])$")
PREFIX = "agentplane:rl"


class Unreachable(Exception):
    """Redis could not be reached (refused, reset or timed out)."""


@dataclass(frozen=True)
class Window:
    """At most `limit` hits per fixed window of `seconds` under `key`."""

    key: str
    limit: int
    seconds: int
    name: str = ""  # the policy's name in the RateLimit headers ("api", "publish" ...)


@dataclass(frozen=True)
class Quota:
    """A counter that `amount` may raise to at most `limit` (a month's messages)."""

    key: str
    limit: int
    amount: int
    ttl_seconds: int
    name: str = ""


@dataclass(frozen=True)
class Charge:
    """Add `amount` to field `field` of hash `hash_key` (or raise it to `amount` when `op` is
    "max"), only if the request is allowed and, with a `dedup_key`, the first time that key is
    seen. With `op` "unique", `member` joins the set `<hash_key>:distinct` (as
    `<field>\\t<member>`) and the field counts the members it added."""

    hash_key: str
    field: str
    amount: int
    op: str = "sum"
    dedup_key: str | None = None
    member: str = ""


@dataclass(frozen=True)
class Usage:
    """A window after this request: the IETF RateLimit fields."""

    name: str
    limit: int
    remaining: int
    reset: int  # seconds until the window restarts
    window: int


@dataclass(frozen=True)
class Outcome:
    usages: list[Usage]
    counted: int  # charges applied (duplicates of reported events are not)
    new_dedup_keys: int = 0  # reported events seen for the first time
    quota_values: tuple[int, ...] = ()  # each quota's counter after this request
    missing_quota: Quota | None = None  # a quota counter that must be seeded first


@dataclass
class _Plan:
    keys: list[str] = field(default_factory=list)
    args: list[Any] = field(default_factory=list)


# KEYS: windows, quotas, then every other key (hashes, dedup keys, index sets) by position.
# ARGV: nw, [limit, window_ms]*nw, nq, [limit, amount, ttl_s]*nq, hash_ttl_s, dedup_ttl_s,
#       nc, [hash_index, op, field, amount, dedup_index(0 = none), member]*nc,
#       ni, [set_index, member]*ni   (index sets: which hashes exist, for the rollup)
# Returns {1, counted, new_dedup_keys, remaining_1, ttl_1, ..., quota_value_1, ...} when
# allowed; {0, window_index, ttl} when a window is full; {-1, quota_index, current} when a
# quota would be passed; {-2, quota_index} when a quota counter does not exist yet (the caller
# seeds it, then retries). A refused request leaves every counter as it was.
#
# What a request usually costs: INCR and PTTL per window, HINCRBY per charge. The rest runs only
# when a key is created: PEXPIRE with a window's first hit; EXPIRE of the hashes and the index
# sets' SADDs when a charge creates a field (a new hash creates all its fields, so every hash
# the rollup must see is indexed, and a rollup that moved a hash aside sees the next one).
SCRIPT = """
local nw = tonumber(ARGV[1])
local result = {1, 0, 0}
for i = 1, nw do
  local count = redis.call('INCR', KEYS[i])
  local ttl
  if count == 1 then
    ttl = tonumber(ARGV[2 * i + 1])
    redis.call('PEXPIRE', KEYS[i], ttl)
  else
    ttl = redis.call('PTTL', KEYS[i])
    if ttl < 0 then
      ttl = tonumber(ARGV[2 * i + 1])
      redis.call('PEXPIRE', KEYS[i], ttl)
    end
  end
  local left = tonumber(ARGV[2 * i]) - count
  if left < 0 then
    for k = 1, i do redis.call('DECR', KEYS[k]) end
    return {0, i, ttl}
  end
  result[#result + 1] = left
  result[#result + 1] = ttl
end
local a = 2 + 2 * nw
local nq = tonumber(ARGV[a])
a = a + 1
local qa = a
for j = 1, nq do
  local current = redis.call('GET', KEYS[nw + j])
  local refusal
  if not current then
    refusal = {-2, j}
  elseif tonumber(current) + tonumber(ARGV[a + 1]) > tonumber(ARGV[a]) then
    refusal = {-1, j, tonumber(current)}
  end
  if refusal then
    for k = 1, nw do redis.call('DECR', KEYS[k]) end
    return refusal
  end
  a = a + 3
end
a = qa
for j = 1, nq do
  result[#result + 1] = redis.call('INCRBY', KEYS[nw + j], ARGV[a + 1])
  redis.call('EXPIRE', KEYS[nw + j], ARGV[a + 2])
  a = a + 3
end
local hash_ttl = ARGV[a]
local dedup_ttl = ARGV[a + 1]
local nc = tonumber(ARGV[a + 2])
a = a + 3
local seen = {}
local counted = 0
local fresh_keys = 0
local created = false
local touched = {}
for c = 1, nc do
  local h = KEYS[tonumber(ARGV[a])]
  local op = ARGV[a + 1]
  local f = ARGV[a + 2]
  local d = tonumber(ARGV[a + 4])
  local fresh = true
  if d > 0 then
    if seen[d] == nil then
      seen[d] = redis.call('SET', KEYS[d], '1', 'NX', 'EX', dedup_ttl) and true or false
      if seen[d] then fresh_keys = fresh_keys + 1 end
    end
    fresh = seen[d]
  end
  if fresh then
    if op == 'max' then
      local amount = tonumber(ARGV[a + 3])
      local current = redis.call('HGET', h, f)
      if not current then
        created = true
        redis.call('HSET', h, f, amount)
      elseif amount > tonumber(current) then
        redis.call('HSET', h, f, amount)
      end
      touched[h] = touched[h] or 'hash'
    elseif op == 'unique' then
      if redis.call('SADD', h .. ':distinct', f .. '\\t' .. ARGV[a + 5]) == 1 then
        if redis.call('HINCRBY', h, f, 1) == 1 then created = true end
      end
      touched[h] = 'unique'
    else
      local amount = tonumber(ARGV[a + 3])
      if redis.call('HINCRBY', h, f, amount) == amount then created = true end
      touched[h] = touched[h] or 'hash'
    end
    counted = counted + 1
  end
  a = a + 6
end
local ni = tonumber(ARGV[a])
a = a + 1
if created then
  for h, kind in pairs(touched) do
    redis.call('EXPIRE', h, hash_ttl)
    if kind == 'unique' then redis.call('EXPIRE', h .. ':distinct', hash_ttl) end
  end
  for s = 1, ni do
    redis.call('SADD', KEYS[tonumber(ARGV[a])], ARGV[a + 1])
    a = a + 2
  end
end
result[2] = counted
result[3] = fresh_keys
return result
"""


def parse_rate(rate: str) -> tuple[int, int]:
    """ "10/m" -> (10, 60); "20/5m" -> (20, 300)."""
    match = RATE_PATTERN.match(rate.strip())
    if match is None:
        raise ValueError(f"not a rate: {rate!r} (use 10/s, 60/m, 20/5m, 100/h, 1000/d)")
    count, multiple, unit = match.groups()
    return int(count), int(multiple or 1) * UNITS[unit]


# Redis ------------------------------------------------------------------------------------------

_clients: dict[tuple[str, float, float], Any] = {}
_scripts: dict[int, Any] = {}
_lock = threading.Lock()


def _redis_location() -> tuple[str, float, float] | None:
    """The shared cache's Redis (Django's CACHES), so that one setting moves both."""
    cache = settings.CACHES.get("default", {})
    if "redis" not in cache.get("BACKEND", "").lower():
        return None
    location = cache["LOCATION"]
    if isinstance(location, list | tuple):
        location = location[0]
    options = cache.get("OPTIONS", {})
    return (
        location,
        float(options.get("socket_connect_timeout", 1)),
        float(options.get("socket_timeout", 1)),
    )


# The last CACHES["default"] seen and its client: settings are read on every request, and
# replaced (not changed in place) when tests override them.
_last: tuple[Any, Any] = (None, None)


def redis_client() -> Any | None:
    """The counters' Redis client (one per process and location), or None without Redis."""
    import redis

    global _last
    cache = settings.CACHES.get("default")
    if _last[0] is cache and cache is not None:
        return _last[1]
    location = _redis_location()
    if location is None:
        _last = (cache, None)
        return None
    client = _clients.get(location)
    if client is None:
        with _lock:
            client = _clients.get(location)
            if client is None:
                url, connect_timeout, timeout = location
                client = redis.Redis.from_url(
                    url,
                    socket_connect_timeout=connect_timeout,
                    socket_timeout=timeout,
                    health_check_interval=30,
                )
                _clients[location] = client
    _last = (cache, client)
    return client


def _script(client: Any) -> Any:
    script = _scripts.get(id(client))
    if script is None:
        script = client.register_script(SCRIPT)
        _scripts[id(client)] = script
    return script


# The script's connections, apart from redis-py's pool, per client: taken and put back with a
# list's pop and append (atomic under the GIL, so threads never share one). redis-py's pool
# costs more per call than the round trip's own Python: it polls the socket for stray data,
# records observability counters and dispatches a release event. A connection here always has
# its reply read in full, or is disconnected (it reconnects on its next use).
_idle: dict[int, list[Any]] = {}


def _forget_connections() -> None:
    # A forked child must not share its parent's sockets; redis-py closes them without
    # shutting them down in a process that did not open them.
    _idle.clear()


os.register_at_fork(after_in_child=_forget_connections)


def _send(client: Any, prepared: Prepared, attempt: int) -> tuple[Any, bool, int]:
    """Send the script's call (one EVALSHA, pre-packed, on a connection of this module's own);
    returns the connection whose reply `_receive` reads, whether it was open before, and the
    attempt. The packed command is kept on `prepared`: redis-py takes longer to pack a call's
    ~20 arguments than the round trip itself (bench/billing_bench.py). A connection that was
    open (stale: the server closed it) is retried once on a new one, as redis-py's own retry
    would; a failed connect is not (Redis is unreachable: the caller's policy applies at once)."""
    import redis

    idle = _idle.get(id(client))
    if idle is None:
        idle = _idle.setdefault(id(client), [])
    try:
        connection = idle.pop()
    except IndexError:
        pool = client.connection_pool
        connection = pool.connection_class(**pool.connection_kwargs)
    connected = connection._sock is not None
    try:
        packed = prepared.packed
        if packed is None or packed[0] != id(client):
            keys, args = prepared.keys, prepared.args
            sha = _script(client).sha
            command = connection.pack_command("EVALSHA", sha, len(keys), *keys, *args)
            packed = prepared.packed = (id(client), command)
        connection.send_packed_command(packed[1])
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
        connection.disconnect()  # redis-py closed it already
        idle.append(connection)
        if attempt >= 1 or not connected:
            raise
        return _send(client, prepared, attempt + 1)
    except BaseException:
        connection.disconnect()  # interrupted mid-call: what it holds is unknown
        idle.append(connection)
        raise
    return connection, connected, attempt


def _receive(
    client: Any, prepared: Prepared, connection: Any, connected: bool, attempt: int
) -> Any:
    """The reply to what `_send` sent on `connection`, which goes back to the idle list read in
    full or disconnected (it reconnects on its next use). Loads the script when the server does
    not know it (a restart) and sends the call again."""
    import redis

    idle = _idle.setdefault(id(client), [])
    try:
        reply = connection.read_response()
    except redis.exceptions.NoScriptError:
        idle.append(connection)  # an error reply, read in full
        if attempt == 2:
            raise
        client.script_load(SCRIPT)
        return _receive(client, prepared, *_send(client, prepared, attempt + 1))
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
        connection.disconnect()
        idle.append(connection)
        if attempt >= 1 or not connected:
            raise
        return _receive(client, prepared, *_send(client, prepared, attempt + 1))
    except redis.exceptions.ResponseError:
        idle.append(connection)  # an error reply, read in full: ready for the next call
        raise
    except BaseException:
        connection.disconnect()  # interrupted mid-call: what it holds is unknown
        idle.append(connection)
        raise
    idle.append(connection)
    return reply


def unreachable_errors() -> tuple[type[BaseException], ...]:
    import redis

    return (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)


# In memory (no Redis configured: development, one process) ------------------------------------

_memory: dict[str, Any] = {}
_expiry: dict[str, float] = {}
_memory_lock = threading.Lock()


def _alive(key: str, now: float) -> bool:
    expires = _expiry.get(key)
    if expires is not None and expires <= now:
        _memory.pop(key, None)
        _expiry.pop(key, None)
    return key in _memory


def _run_in_memory(keys: list[str], args: list[Any]) -> list[int]:
    """The script's semantics in this process (same arguments, same answers)."""
    now = time.monotonic()
    with _memory_lock:
        nw = int(args[0])
        a = 1
        for i in range(nw):
            limit, window_ms = int(args[a]), int(args[a + 1])
            key = keys[i]
            current = int(_memory[key]) if _alive(key, now) else 0
            if current >= limit:
                if key not in _expiry:
                    _expiry[key] = now + window_ms / 1000
                return [0, i + 1, int((_expiry[key] - now) * 1000)]
            a += 2
        nq = int(args[a])
        a += 1
        quota_start = a
        for j in range(nq):
            key = keys[nw + j]
            if not _alive(key, now):
                return [-2, j + 1]
            if int(_memory[key]) + int(args[a + 1]) > int(args[a]):
                return [-1, j + 1, int(_memory[key])]
            a += 3
        result = [1, 0, 0]
        a = 1
        for i in range(nw):
            limit, window_ms = int(args[a]), int(args[a + 1])
            key = keys[i]
            count = (int(_memory[key]) if _alive(key, now) else 0) + 1
            _memory[key] = count
            if count == 1:
                _expiry[key] = now + window_ms / 1000
            result += [limit - count, int((_expiry[key] - now) * 1000)]
            a += 2
        a = quota_start
        for j in range(nq):
            key = keys[nw + j]
            _memory[key] = int(_memory[key]) + int(args[a + 1])
            _expiry[key] = now + int(args[a + 2])
            result.append(_memory[key])
            a += 3
        hash_ttl, dedup_ttl, nc = int(args[a]), int(args[a + 1]), int(args[a + 2])
        a += 3
        seen: dict[int, bool] = {}
        counted = 0
        for _ in range(nc):
            hash_key = keys[int(args[a]) - 1]
            op, name, amount, d = args[a + 1], args[a + 2], int(args[a + 3]), int(args[a + 4])
            fresh = True
            if d > 0:
                if d not in seen:
                    seen[d] = not _alive(keys[d - 1], now)
                    if seen[d]:
                        result[2] += 1
                        _memory[keys[d - 1]] = 1
                        _expiry[keys[d - 1]] = now + dedup_ttl
                fresh = seen[d]
            if fresh:
                table = _memory.get(hash_key) if _alive(hash_key, now) else None
                if table is None:
                    table = _memory[hash_key] = {}
                if op == "max":
                    if name not in table or amount > table[name]:
                        table[name] = amount
                elif op == "unique":
                    set_key = f"{hash_key}:distinct"
                    members = _memory.get(set_key) if _alive(set_key, now) else None
                    if members is None:
                        members = _memory[set_key] = set()
                    member = f"{name}\t{args[a + 5]}"
                    if member not in members:
                        members.add(member)
                        table[name] = table.get(name, 0) + 1
                    _expiry[set_key] = now + hash_ttl
                else:
                    table[name] = table.get(name, 0) + amount
                _expiry[hash_key] = now + hash_ttl
                counted += 1
            a += 6
        ni = int(args[a])
        a += 1
        for _ in range(ni):
            set_key = keys[int(args[a]) - 1]
            members = _memory.get(set_key) if _alive(set_key, now) else None
            if members is None:
                members = _memory[set_key] = set()
            members.add(args[a + 1])
            a += 2
        result[1] = counted
        return result


def memory_hash(key: str) -> dict[str, int]:
    """A hash counted in memory (no Redis): what the ledger's rollup and reports read."""
    with _memory_lock:
        if not _alive(key, time.monotonic()):
            return {}
        return dict(_memory[key])


def memory_exists(key: str) -> bool:
    with _memory_lock:
        return _alive(key, time.monotonic())


def memory_pop(key: str) -> Any:
    with _memory_lock:
        _expiry.pop(key, None)
        return _memory.pop(key, None)


def memory_members(key: str) -> set[str]:
    with _memory_lock:
        if not _alive(key, time.monotonic()):
            return set()
        return set(_memory[key])


def memory_set(key: str, value: Any, ttl_seconds: int, *, only_if_missing: bool) -> None:
    with _memory_lock:
        if only_if_missing and _alive(key, time.monotonic()):
            return
        _memory[key] = value
        _expiry[key] = time.monotonic() + ttl_seconds


# The one entry point ------------------------------------------------------------------------------


class Prepared:
    """One script call's keys and arguments, built once: a caller whose requests repeat the same
    call (an organization's API requests within an hour) keeps it and runs it again
    (`run`); its packed command is kept with it."""

    __slots__ = ("windows", "quotas", "keys", "args", "packed")

    def __init__(
        self,
        *,
        windows: Sequence[Window] = (),
        quotas: Sequence[Quota] = (),
        charges: Sequence[Charge] = (),
        index_sets: Sequence[tuple[str, str]] = (),
        hash_ttl_seconds: int = 7 * 86400,
        dedup_ttl_seconds: int = 7 * 86400,
    ) -> None:
        self.windows = tuple(windows)
        self.quotas = tuple(quotas)
        keys: list[str] = [w.key for w in windows] + [q.key for q in quotas]
        positions: dict[str, int] = {}

        def position(key: str) -> int:
            if key not in positions:
                keys.append(key)
                positions[key] = len(keys)
            return positions[key]

        args: list[Any] = [len(windows)]
        for window in windows:
            args += [window.limit, window.seconds * 1000]
        args.append(len(quotas))
        for quota in quotas:
            args += [quota.limit, quota.amount, quota.ttl_seconds]
        args += [hash_ttl_seconds, dedup_ttl_seconds, len(charges)]
        for charge in charges:
            dedup = position(charge.dedup_key) if charge.dedup_key else 0
            args += [
                position(charge.hash_key),
                charge.op,
                charge.field,
                charge.amount,
                dedup,
                charge.member,
            ]
        args.append(len(index_sets))
        for set_key, member in index_sets:
            args += [position(set_key), member]
        self.keys = keys
        self.args = args
        self.packed: tuple[int, Any] | None = None  # (id of the client, the packed EVALSHA)


def consume(
    *,
    windows: Sequence[Window] = (),
    quotas: Sequence[Quota] = (),
    charges: Sequence[Charge] = (),
    index_sets: Sequence[tuple[str, str]] = (),
    hash_ttl_seconds: int = 7 * 86400,
    dedup_ttl_seconds: int = 7 * 86400,
) -> Outcome:
    """Check `windows` and `quotas`, then count them and apply `charges`, atomically.

    Raises RateLimited (a full window, with its name and retry time), Unreachable (Redis could not
    be reached: the caller applies its policy), or returns the Outcome. A quota that would be
    passed is reported by raising `QuotaPassed`; a quota counter that does not exist yet comes
    back as `missing_quota` with nothing counted.
    """
    return run(
        Prepared(
            windows=windows,
            quotas=quotas,
            charges=charges,
            index_sets=index_sets,
            hash_ttl_seconds=hash_ttl_seconds,
            dedup_ttl_seconds=dedup_ttl_seconds,
        )
    )


def run(prepared: Prepared) -> Outcome:
    """`consume` with its call built beforehand (the same answers and errors)."""
    return send(prepared).outcome()


class Sent:
    """A call sent, its reply not read yet (`send`): the caller does other work meanwhile, such
    as a read of its own database, and the round trip overlaps it."""

    __slots__ = ("_prepared", "_client", "_state", "_reply", "_error")

    def __init__(self, prepared: Prepared) -> None:
        self._prepared = prepared
        self._client = client = redis_client()
        self._state: tuple[Any, bool, int] | None = None
        self._reply: Any = None
        self._error: BaseException | None = None
        if client is None:
            self._reply = _run_in_memory(prepared.keys, prepared.args)
            return
        try:
            self._state = _send(client, prepared, 0)
        except unreachable_errors() as error:
            self._error = Unreachable(str(error))
            self._error.__cause__ = error

    def reply(self) -> Any:
        """The script's reply as it came (read on the first call); raises Unreachable."""
        if self._error is not None:
            raise self._error
        if self._state is not None:
            state, self._state = self._state, None
            try:
                self._reply = _receive(self._client, self._prepared, *state)
            except unreachable_errors() as error:
                self._error = Unreachable(str(error))
                self._error.__cause__ = error
                raise self._error from error
        return self._reply

    def outcome(self) -> Outcome:
        """What `run` answers, its errors too."""
        return _outcome(self._prepared, self.reply())


def send(prepared: Prepared) -> Sent:
    """Send `prepared`'s call and return at once; `Sent.outcome()` reads the reply. Counted in
    Redis as soon as it arrives there, whether or not the reply is read: a caller that never
    reads it loses the connection it was sent on, nothing else."""
    return Sent(prepared)


async def run_async(prepared: Prepared) -> Outcome:
    """`run` from an event loop, without a thread: the same script, answers and errors. The
    calls of one loop are sent in order, as many per round trip as are waiting (_AsyncSender)."""
    if redis_client() is None:
        return _outcome(prepared, _run_in_memory(prepared.keys, prepared.args))
    location = _redis_location()
    assert location is not None
    try:
        reply = await _async_sender(location).call(prepared)
    except unreachable_errors() as error:
        raise Unreachable(str(error)) from error
    return _outcome(prepared, reply)


class _AsyncSender:
    """One loop's script calls: queued, and sent in order in pipelines, one at a time, so that
    the calls of one caller reach Redis in the order it made them (a connection's publishes are
    admitted in order), and a hundred waiting calls cost one round trip, not a hundred."""

    MAX_BATCH = 500

    def __init__(self, location: tuple[str, float, float]) -> None:
        import redis.asyncio

        url, connect_timeout, timeout = location
        self.client = redis.asyncio.Redis.from_url(
            url, socket_connect_timeout=connect_timeout, socket_timeout=timeout
        )
        self.sha = _script(redis_client()).sha
        self.waiting: list[tuple[Prepared, Any]] = []
        self.sender: Any = None

    async def call(self, prepared: Prepared) -> Any:
        import asyncio

        future = asyncio.get_running_loop().create_future()
        self.waiting.append((prepared, future))
        if self.sender is None or self.sender.done():
            self.sender = asyncio.ensure_future(self._send_waiting())
        return await future

    async def _send_waiting(self) -> None:
        import redis

        while self.waiting:
            batch = self.waiting[: self.MAX_BATCH]
            del self.waiting[: self.MAX_BATCH]
            try:
                pipe = self.client.pipeline(transaction=False)
                for prepared, _future in batch:
                    pipe.execute_command(
                        "EVALSHA", self.sha, len(prepared.keys), *prepared.keys, *prepared.args
                    )
                replies = await pipe.execute(raise_on_error=False)
                if any(isinstance(r, redis.exceptions.NoScriptError) for r in replies):
                    await self.client.script_load(SCRIPT)  # a restarted server: once, again
                    replies = [
                        await self.client.evalsha(self.sha, len(p.keys), *p.keys, *p.args)
                        if isinstance(reply, redis.exceptions.NoScriptError)
                        else reply
                        for (p, _f), reply in zip(batch, replies, strict=True)
                    ]
            except Exception as error:  # noqa: BLE001 - each caller gets the error of its call
                for _prepared, future in batch:
                    if not future.done():
                        future.set_exception(error)
                continue
            for (_prepared, future), reply in zip(batch, replies, strict=True):
                if future.done():
                    continue
                if isinstance(reply, Exception):
                    future.set_exception(reply)
                else:
                    future.set_result(reply)


_senders: Any = None


def _async_sender(location: tuple[str, float, float]) -> _AsyncSender:
    """The running loop's sender for `location` (asyncio clients belong to one loop)."""
    import asyncio
    import weakref

    global _senders
    if _senders is None:
        _senders = weakref.WeakKeyDictionary()
    per_loop = _senders.setdefault(asyncio.get_running_loop(), {})
    sender = per_loop.get(location)
    if sender is None:
        sender = per_loop[location] = _AsyncSender(location)
    return sender


def _outcome(prepared: Prepared, reply: Any) -> Outcome:
    """What the script's reply means: RateLimited, QuotaPassed, or the Outcome."""
    windows, quotas = prepared.windows, prepared.quotas
    status = reply[0]
    if status == 0:
        window = windows[int(reply[1]) - 1]
        retry_after = max(1, -(-int(reply[2]) // 1000))
        raise RateLimited(
            retry_after=retry_after,
            limit=window.limit,
            scope=window.name or "limit",
            window=window.seconds,
        )
    if status == -1:
        quota = quotas[int(reply[1]) - 1]
        raise QuotaPassed(quota, int(reply[2]))
    if status == -2:
        return Outcome(usages=[], counted=0, missing_quota=quotas[int(reply[1]) - 1])
    usages = [_usage(windows, reply, index) for index in range(len(windows))]
    return Outcome(
        usages=usages,
        counted=reply[1],
        new_dedup_keys=reply[2],
        quota_values=tuple(reply[3 + 2 * len(windows) :]),
    )


def tightest(prepared: Prepared, reply: Any) -> Usage | None:
    """For an allowed reply (`reply[0] == 1`): the usage of the window with the least remaining
    (the first of equals), as `min` over `_outcome`'s usages gives it; None without windows."""
    windows = prepared.windows
    best = -1
    for index in range(len(windows)):
        if best < 0 or reply[3 + 2 * index] < reply[3 + 2 * best]:
            best = index
    return _usage(windows, reply, best) if best >= 0 else None


def _usage(windows: Sequence[Window], reply: Any, index: int) -> Usage:
    """Window `index`'s usage in an allowed reply (remaining, then the TTL in milliseconds)."""
    window = windows[index]
    return Usage(
        window.name or "limit",
        window.limit,
        max(reply[3 + 2 * index], 0),
        max(0, -(-reply[4 + 2 * index] // 1000)),
        window.seconds,
    )


class QuotaPassed(Exception):
    def __init__(self, quota: Quota, current: int) -> None:
        super().__init__(quota.name or quota.key)
        self.quota = quota
        self.current = current


def namespace() -> str:
    """The current organization's part of every key ("platform" on the public host)."""
    tenant = context.current_tenant()
    return str(tenant.public_id) if tenant is not None else "platform"


# Staff's temporary limit of a resource for one organization (billing registers the lookup:
# it is a layer above): (tenant, resource) -> (limit, window seconds), or None.
_override: Callable[[Any, str], tuple[int, int] | None] | None = None


def register_override(lookup: Callable[[Any, str], tuple[int, int] | None]) -> None:
    global _override
    _override = lookup


def hit(
    *, scope: str, key: str, rate: str, fail_closed: bool, resource: str | None = None
) -> Usage | None:
    """Count one request against `rate` for `key` within the current organization.

    With `resource` (`auth`, `export`), staff's unexpired override of that resource for the
    current organization replaces `rate` (each window keeps its own key).
    Raises RateLimited when over the limit, RateLimiterUnavailable when Redis cannot be reached
    and `fail_closed`; returns the usage (None when failing open).
    """
    limit, seconds = parse_rate(rate)
    if resource is not None and _override is not None:
        tenant = context.current_tenant()
        found = _override(tenant, resource) if tenant is not None else None
        if found is not None:
            limit, seconds = found
    window = Window(
        key=f"{PREFIX}:{namespace()}:{scope}:{key}", limit=limit, seconds=seconds, name=scope
    )
    try:
        outcome = consume(windows=[window])
    except Unreachable:
        if fail_closed:
            logger.error("rate limiter unavailable for %s: refusing", scope)
            raise RateLimiterUnavailable from None
        logger.warning("rate limit %s not enforced: Redis is unreachable", scope)
        return None
    except RateLimited as error:
        error.scope = scope
        raise
    usage = outcome.usages[0]
    return Usage(scope, usage.limit, usage.remaining, usage.reset, usage.window)

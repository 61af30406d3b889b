"""The Redis channel layer: channels-redis' pub/sub layer, with this process's publishes batched.

`channels_redis.pubsub.RedisPubSubChannelLayer` makes each group one Redis pub/sub channel: a
`group_send` is one PUBLISH, and each process subscribes once to the groups its sockets joined
and hands every message to those sockets itself (no per-socket Redis list to poll, as the core
layer's BZPOPMIN does: one pop per socket and message). Live events are at most once either way;
what the pub/sub layer gives up (a per-channel capacity in Redis, messages that wait for a
consumer that is not reading yet) the gateway does not rely on: each socket has its own bounded
outgoing queue (gateway.consumers), and an event published while no socket listens is lost with
the core layer too, once its expiry passes.

What this module adds: channels-redis sends one PUBLISH at a time per process (a lock around each
round trip), so a process publishes at most one message per Redis round trip. Here the publishes
of a loop wait in one queue, in order, and go out together in one pipeline: the same PUBLISHes,
in the same order, but as many per round trip as are waiting (`group_send` of three groups for
one event is one round trip, so are the events of a hundred publishers at once).

Synchronous code (services, after commit) publishes without any event loop: `SyncPublisher`
sends the same PUBLISHes (the layer's channel names, its serializer, its shards) with redis-py's
blocking client, each event serialised once for all its groups, every waiting event in one
pipeline (tenants.events runs it in one thread per process).

Pinned channels-redis version (pyproject.toml): the subclasses below replace its shard connection.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import redis
from channels_redis.pubsub import (
    RedisPubSubChannelLayer,
    RedisPubSubLoopLayer,
    RedisSingleShardConnection,
)
from channels_redis.utils import _consistent_hash, _wrap_close, decode_hosts

# At most this many PUBLISHes in one pipeline (more wait for the next round trip).
MAX_BATCH = 1000


class BatchingShardConnection(RedisSingleShardConnection):
    """A shard whose publishes are queued and sent in pipelines, one pipeline at a time."""

    def __init__(self, host: Any, channel_layer: Any) -> None:
        super().__init__(host, channel_layer)
        self._outgoing: list[tuple[str, bytes, asyncio.Future]] = []
        self._sender: asyncio.Task | None = None

    async def publish(self, channel: str, message: bytes) -> None:
        future = asyncio.get_running_loop().create_future()
        self._outgoing.append((channel, message, future))
        if self._sender is None or self._sender.done():
            self._sender = asyncio.ensure_future(self._send_waiting())
        await future

    async def _send_waiting(self) -> None:
        while self._outgoing:
            batch, self._outgoing = self._outgoing[:MAX_BATCH], self._outgoing[MAX_BATCH:]
            try:
                async with self._lock:
                    self._ensure_redis()
                    pipe = self._redis.pipeline(transaction=False)
                    for channel, message, _future in batch:
                        pipe.publish(channel, message)
                    await pipe.execute()
            except asyncio.CancelledError:
                for *_, future in batch + self._outgoing:
                    future.cancel()
                self._outgoing = []
                raise
            except Exception as error:  # noqa: BLE001 - each caller gets the error of its send
                for *_, future in batch:
                    if not future.done():
                        future.set_exception(error)
                continue
            for *_, future in batch:
                if not future.done():
                    future.set_result(None)

    async def flush(self) -> None:
        if self._sender is not None and not self._sender.done():
            self._sender.cancel()
        self._sender = None
        await super().flush()


class BatchingLoopLayer(RedisPubSubLoopLayer):
    def __init__(self, hosts: Any = None, *args: Any, **kwargs: Any) -> None:
        super().__init__(hosts, *args, **kwargs)
        self._shards = [BatchingShardConnection(host, self) for host in decode_hosts(hosts)]


class PubSubChannelLayer(RedisPubSubChannelLayer):
    """`RedisPubSubChannelLayer` with batched publishes (settings.CHANNEL_LAYERS)."""

    _last: tuple[bytes, dict] | None = None

    def deserialize(self, message: bytes) -> dict:
        """A group's message reaches each of its sockets in this process as the same bytes:
        decoded once (each socket gets its own copy of the top level), not once per socket."""
        last = self._last
        if last is not None and last[0] is message:
            return dict(last[1])
        value = super().deserialize(message)
        self._last = (message, value)
        return dict(value)

    def _get_layer(self) -> BatchingLoopLayer:
        loop = asyncio.get_running_loop()
        try:
            return self._layers[loop]
        except KeyError:
            layer = BatchingLoopLayer(*self._args, **self._kwargs, channel_layer=self)
            self._layers[loop] = layer
            _wrap_close(self, loop)
            return layer


def _blocking_pool(host: dict[str, Any]) -> redis.ConnectionPool:
    """channels_redis.utils.create_pool's pool for one host, with redis-py's blocking client."""
    host = dict(host)
    if "address" in host:
        return redis.ConnectionPool.from_url(host.pop("address"), **host)
    master_name = host.pop("master_name", None)
    if master_name is not None:
        from redis.sentinel import Sentinel, SentinelConnectionPool

        sentinel = Sentinel(
            host.pop("sentinels"), sentinel_kwargs=host.pop("sentinel_kwargs", None)
        )
        return SentinelConnectionPool(master_name, sentinel, **host)
    return redis.ConnectionPool(**host)


class SyncPublisher:
    """`group_send` for synchronous code: the PUBLISHes the layer would send (its prefix, its
    serializer, each group's shard), from one thread, no event loop. `publish` takes a batch of
    (groups, message): each message is serialised once, and the whole batch is one pipeline per
    shard, i.e. one round trip, in order. Used by one thread at a time (tenants.events), so each
    shard's connection is its own, held from the first batch to `close`: no pool to take it from
    and give it back to for every batch (redis-py's pool bookkeeping was most of the thread's
    CPU with one or two events a batch)."""

    def __init__(self, layer: RedisPubSubChannelLayer) -> None:
        hosts = layer._kwargs.get("hosts", layer._args[0] if layer._args else None)
        self._layer = layer
        self._prefix = layer._kwargs.get("prefix", "asgi")
        self._connections = [_blocking_pool(host).make_connection() for host in decode_hosts(hosts)]

    def channel(self, group: str) -> str:
        """The Redis channel of `group` (RedisPubSubLoopLayer._get_group_channel_name)."""
        return f"{self._prefix}__group__{group}"

    def publish(self, batch: list[tuple[Sequence[str], dict[str, Any]]]) -> None:
        commands: dict[int, list[tuple[str, str, bytes]]] = {}
        for groups, message in batch:
            data = self._layer.serialize(message)
            for group in groups:
                channel = self.channel(group)
                shard = _consistent_hash(channel, len(self._connections))
                commands.setdefault(shard, []).append(("PUBLISH", channel, data))
        for shard, publishes in commands.items():
            self._send(self._connections[shard], publishes)

    @staticmethod
    def _send(connection: redis.Connection, commands: list[tuple[str, str, bytes]]) -> None:
        """The commands in one write, then their replies: a pipeline without redis-py's
        Pipeline object (half its CPU). A connection that failed is closed; the next batch
        connects it again."""
        try:
            connection.send_packed_command(connection.pack_commands(commands))
            for _ in commands:
                connection.read_response()
        except BaseException:
            connection.disconnect()
            raise

    def close(self) -> None:
        for connection in self._connections:
            connection.disconnect()

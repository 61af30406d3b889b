"""Real-time events: group names, the fan-out of one event to its groups, publishing after commit.

Channels groups have no wildcards, and subscribers use NATS-style ones (`*` one token, `>` the
rest). An event on subject `a.b.c` is therefore sent to the exact group of `a.b.c` and to the
*prefix groups* of ``, `a` and `a.b`. A literal subscription joins the exact group; a pattern
joins the prefix group of its literal head (`agents.*.metrics` -> prefix `agents`) and the
consumer matches the pattern itself (gateway.subjects.matches). A publish costs one group_send
per token plus one (at most 17), whatever the number of subscribers; docs/gateway.md measures it.

Each organization also has one server-only *control group* (`control_group`), which every
authenticated socket joins: `recheck_on_commit` tells them, in every process, to check their
credential again at once after a change that can revoke it (a key revoked, a member deactivated
or demoted, the organization suspended or deleted). No subject can name it.
"""

from __future__ import annotations

import asyncio
import atexit
import functools
import hashlib
import logging
import os
import re
import threading
import time
import uuid
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction
from django.utils import timezone

from core import metrics

if TYPE_CHECKING:
    from tenants.models import Tenant

logger = logging.getLogger(__name__)

# Full matches only: `$` would also match before a trailing newline.
SUBJECT_TOKEN = re.compile(r"[A-Za-z0-9_-]+")
# Channels refuses group names of 100 characters or more.
MAX_GROUP_LENGTH = 99
MESSAGE_TYPE = "tenant.event"
CONTROL_MESSAGE_TYPE = "tenant.control"


def _valid_tokens(subject: str) -> bool:
    return all(SUBJECT_TOKEN.fullmatch(token) for token in subject.split("."))


def group_name(tenant_id: str, subject: str, *, prefix: bool = False) -> str:
    """The one builder of Channels group names: `tenant.<tenant_id>.<subject>`.

    `prefix=True` names the group of every subject *below* `subject` (`tenant.<id>.<subject>..`;
    `tenant.<id>..` for the root): a valid subject never has an empty token, so the two kinds
    never collide. A name that would be too long for Channels ends in a hash of the subject
    instead (`tenant.<id>...<sha256>`), again unambiguous because of the empty tokens.
    """
    if prefix and subject == "":
        return f"tenant.{tenant_id}.."
    if not subject or not _valid_tokens(subject):
        raise ValueError(f"invalid subject: {subject!r}")
    name = f"tenant.{tenant_id}.{subject}" + (".." if prefix else "")
    if len(name) > MAX_GROUP_LENGTH:
        digest = hashlib.sha256(f"{'P' if prefix else 'S'}:{subject}".encode()).hexdigest()[:40]
        name = f"tenant.{tenant_id}...{digest}"
    return name


def groups_for(tenant_id: str, subject: str) -> list[str]:
    """Every group an event on `subject` goes to: its exact group and each prefix group."""
    return list(_groups(tenant_id, subject))


@functools.lru_cache(maxsize=4096)
def _groups(tenant_id: str, subject: str) -> tuple[str, ...]:
    # Cached: an organization's events repeat a few subjects (an invalid one raises, uncached).
    tokens = subject.split(".")
    prefixes = [".".join(tokens[:length]) for length in range(len(tokens))]
    return (group_name(tenant_id, subject),) + tuple(
        group_name(tenant_id, head, prefix=True) for head in prefixes
    )


def event_message(tenant_id: str, subject: str, data: Any) -> dict[str, Any]:
    """The layer message of one event; the server stamps `tenant`, `timestamp` and `id`."""
    return {
        "type": MESSAGE_TYPE,
        "id": uuid.uuid4().hex,
        "subject": subject,
        "tenant": tenant_id,
        "timestamp": timezone.now().isoformat(),
        "data": data,
    }


def control_group(tenant_id: str) -> str:
    """The organization's control group, `tenant.<id>...control`: joined by the server only.

    Subject groups are `tenant.<id>.<tokens>`, `tenant.<id>.<tokens>..`, `tenant.<id>..` and
    `tenant.<id>...<40 hex digits>`; a subject never has an empty token and `control` is not a
    hex digest, so no subject or pattern a client sends can produce this name.
    """
    return f"tenant.{tenant_id}...control"


async def _group_send(groups: Sequence[str], message: dict[str, Any]) -> None:
    """The only `group_send` of the project (synchronous code publishes through `_Publisher`,
    the same PUBLISHes)."""
    layer = get_channel_layer()
    if layer is None:
        return
    started = time.perf_counter()
    await asyncio.gather(*(layer.group_send(group, message) for group in groups))
    metrics.CHANNEL_LAYER_SEND.observe(time.perf_counter() - started)


async def send(tenant_id: str, subject: str, message: dict[str, Any]) -> None:
    """Fan one event out to its groups."""
    await _group_send(groups_for(tenant_id, subject), message)


def _control(tenant_id: str, reason: str) -> tuple[list[str], dict[str, Any]]:
    message = {"type": CONTROL_MESSAGE_TYPE, "tenant": tenant_id, "reason": reason}
    return [control_group(tenant_id)], message


async def send_control(tenant_id: str, reason: str) -> None:
    """Tell every socket of the organization, in every process, to re-check its credential."""
    await _group_send(*_control(tenant_id, reason))


def publish_on_commit(
    tenant: Tenant, subject: str, data: dict[str, Any], *, recheck: bool = False
) -> None:
    """Send `data` to the tenant's `subject` group once the current transaction commits.

    `recheck=True` (a change that can revoke credentials) also sends the control event of
    `recheck_on_commit` first, in the same after-commit callback.
    """
    tenant_id = str(tenant.public_id)
    groups = _groups(tenant_id, subject)  # an invalid subject fails now, in the caller
    message = event_message(tenant_id, subject, data)

    if recheck:
        bump_credential_epoch(tenant_id)

    def deliver() -> None:
        if recheck:
            bump_credential_epoch(tenant_id)
            _announce(tenant_id, subject)
        try:
            _send_groups_from_sync(groups, message)
        except Exception:  # the change is committed; a lost live event must not fail it
            logger.warning("could not publish %s for %s", subject, tenant_id, exc_info=True)

    transaction.on_commit(deliver)


def recheck_on_commit(tenant: Tenant | None, reason: str) -> None:
    """Once the current transaction commits, make the organization's open sockets re-check their
    credential at once (gateway.consumers), instead of at their next periodic check.

    `reason` is the audit action that caused it (`api_key.revoked` ...), for logs only: every
    socket re-checks whatever the reason, since one change can end several kinds of credential
    (a deactivated member's keys stop working too). Outside an organization (the platform's
    own users) there is no namespace and no socket: nothing to do.
    """
    public_id = getattr(tenant, "public_id", None)
    if public_id is None:
        return
    tenant_id = str(public_id)
    bump_credential_epoch(tenant_id)

    def announce() -> None:
        bump_credential_epoch(tenant_id)
        _announce(tenant_id, reason)

    transaction.on_commit(announce)


# --- Credential epoch -------------------------------------------------------------------------
# Every change that can revoke a credential of an organization (the `recheck` changes above)
# replaces the organization's *credential epoch*, a random token in the shared cache (Redis).
# A process that caches verified credentials (credentials.authentication) keeps an entry only
# while the epoch it was loaded under is still the current one, and reads the epoch on every
# request: one Redis GET instead of the database lookup, and a revocation is refused from the
# next request on in every process. The epoch is replaced twice: at once (so that the change's
# own transaction, or a test without commits, sees it) and again after commit (so that an entry
# reloaded between the two, from rows the change had not committed yet, is dropped too).


def credential_epoch_key(tenant_id: str) -> str:
    return f"credential-epoch:{tenant_id}"


def credential_epoch(tenant_id: str) -> str | None:
    """The organization's current credential epoch (None if never set or evicted).

    Raises when the cache is unreachable: callers must then not trust what they cached.
    """
    from django.core.cache import cache

    return cache.get(credential_epoch_key(tenant_id))


def bump_credential_epoch(tenant_id: str) -> None:
    from django.core.cache import cache

    try:
        cache.set(credential_epoch_key(tenant_id), uuid.uuid4().hex, timeout=None)
    except Exception:
        # Cached credentials then live until their maximum age (credentials.authentication).
        logger.error("could not replace the credential epoch of %s", tenant_id, exc_info=True)


def _announce(tenant_id: str, reason: str) -> None:
    try:
        send_control_from_sync(tenant_id, reason)
    except Exception:  # committed; the periodic re-check remains the backstop
        logger.warning("could not announce %s for %s", reason, tenant_id, exc_info=True)


PUBLISH_TIMEOUT_SECONDS = 5.0
# Events handed over but not yet given to the layer (bounded: a layer that is down must not grow
# a worker's memory without end; past it, events are dropped and logged, like a failed send).
MAX_PENDING_EVENTS = 10_000
# At most this many events in one pipeline (the rest wait for the next round trip).
MAX_BATCH = 500


def send_from_sync(tenant_id: str, subject: str, message: dict[str, Any]) -> None:
    """`send` from synchronous code (services), without waiting for the layer.

    With the Redis layer the event joins this process's publishing queue and the caller goes
    on: a service's request does not wait for the fan-out's round trip after its commit. One
    thread per process sends the queue in order, every waiting event in one pipeline, so the
    events of one process reach the layer in the order their transactions committed. (Other
    layers, such as the in-memory one of development, are sent at once: `_pubsub_layer`.)
    """
    _send_groups_from_sync(_groups(tenant_id, subject), message)


def _send_groups_from_sync(groups: tuple[str, ...], message: dict[str, Any]) -> None:
    if not _pubsub_layer():
        async_to_sync(_group_send)(groups, message)
        return
    _publisher().hand_over(groups, message)


def _pubsub_layer() -> bool:
    """Whether the layer is channels-redis' pub/sub one, whose PUBLISHes SyncPublisher sends.
    Any other (the in-memory layer of development, a core Redis layer) gets `async_to_sync`."""
    from channels_redis.pubsub import RedisPubSubChannelLayer

    return isinstance(get_channel_layer(), RedisPubSubChannelLayer)


def flush(timeout: float = PUBLISH_TIMEOUT_SECONDS) -> bool:
    """Wait until this process's queued events are handed to the layer (True if they were)."""
    publisher = _current
    return publisher is None or publisher.flush(timeout)


def send_control_from_sync(tenant_id: str, reason: str) -> None:
    """`send_control` from synchronous code, waiting until the layer has it (a revocation's
    announcement is sent before the service returns).

    With a Redis layer the message goes through this process's publishing queue, after the
    events queued before it, and the caller waits for its round trip. (`async_to_sync` would run
    each publish in a fresh event loop, and channels-redis keeps its connections per loop: new
    Redis connections, ~6 ms, every time.) Other layers keep `async_to_sync`.
    """
    if not _pubsub_layer():
        async_to_sync(send_control)(tenant_id, reason)
        return
    groups, message = _control(tenant_id, reason)
    sent = _Sent()
    if not _publisher().hand_over(groups, message, sent):
        raise RuntimeError("the publishing queue is full")
    if not sent.wait(PUBLISH_TIMEOUT_SECONDS):
        raise TimeoutError("the control event was not published in time")
    if sent.error is not None:
        raise sent.error


class _Sent(threading.Event):
    """Set once a handed-over message's round trip is over; `error` is its failure, if any."""

    error: BaseException | None = None


class _Publisher:
    """This process's publishing thread and its queue (tenants.layers.SyncPublisher sends).

    Started on first use, so after a server forks its workers; one per channel layer (tests
    switch layers). Each round trip sends every event waiting, in the order handed over; a failed
    round trip loses its events (logged), like a failed send, and the next ones still go.
    """

    def __init__(self, layer: Any) -> None:
        from tenants.layers import SyncPublisher

        self.layer = layer
        self.pid = os.getpid()
        self._client = SyncPublisher(layer)
        self._queue: deque[tuple[Sequence[str], dict[str, Any], _Sent | None]] = deque()
        self._condition = threading.Condition()
        self._in_flight = 0  # handed over, round trip not over yet
        self._retired = False
        self.thread = threading.Thread(target=self._run, name="event-publisher", daemon=True)
        self.thread.start()

    def hand_over(
        self, groups: Sequence[str], message: dict[str, Any], sent: _Sent | None = None
    ) -> bool:
        with self._condition:
            if self._in_flight >= MAX_PENDING_EVENTS:
                logger.error("publishing queue full: %s dropped", message.get("subject"))
                return False
            self._queue.append((groups, message, sent))
            self._in_flight += 1
            self._condition.notify_all()
        return True

    def serves(self, layer: Any) -> bool:
        """Whether this publisher sends for `layer` in this process (not a forked copy)."""
        return self.layer is layer and self.pid == os.getpid() and self.thread.is_alive()

    def flush(self, timeout: float) -> bool:
        with self._condition:
            return self._condition.wait_for(lambda: self._in_flight == 0, timeout=timeout)

    def retire(self) -> None:
        """Send what is queued, then end the thread and close its connections."""
        with self._condition:
            self._retired = True
            self._condition.notify_all()

    def _run(self) -> None:
        while True:
            with self._condition:
                while not self._queue and not self._retired:
                    self._condition.wait()
                if not self._queue:
                    break
                count = min(len(self._queue), MAX_BATCH)
                batch = [self._queue.popleft() for _ in range(count)]
            started = time.perf_counter()
            error = None
            try:
                self._client.publish([(groups, message) for groups, message, _ in batch])
            except Exception as failure:  # committed; lost live events must not stop later ones
                error = failure
                logger.warning("could not publish %d events", len(batch), exc_info=True)
            metrics.CHANNEL_LAYER_SEND.observe(time.perf_counter() - started)
            for _groups, _message, sent in batch:
                if sent is not None:
                    sent.error = error
                    sent.set()
            with self._condition:
                self._in_flight -= len(batch)
                self._condition.notify_all()
        self._client.close()


_current: _Publisher | None = None
_publisher_lock = threading.Lock()


def _publisher() -> _Publisher:
    """This process's publisher for the current channel layer."""
    global _current
    layer = get_channel_layer()
    publisher = _current
    if publisher is not None and publisher.serves(layer):
        return publisher
    with _publisher_lock:
        publisher = _current
        if publisher is None or not publisher.serves(layer):
            if publisher is not None and publisher.pid == os.getpid():
                publisher.flush(PUBLISH_TIMEOUT_SECONDS)  # a switched layer: its events first
                publisher.retire()
            _current = publisher = _Publisher(layer)
        return publisher


# A clean shutdown sends what is queued (at most PUBLISH_TIMEOUT_SECONDS).
atexit.register(flush)

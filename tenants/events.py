"""Real-time events: group names, the fan-out of one event to its groups, publishing after commit.

Channels groups have no wildcards, and subscribers use NATS-style ones (`*` one token, `>` the
rest). An event on subject `a.b.c` is therefore sent to the exact group of `a.b.c` and to the
*prefix groups* of ``, `a` and `a.b`. A literal subscription joins the exact group; a pattern
joins the prefix group of its literal head (`agents.*.metrics` -> prefix `agents`) and the
consumer matches the pattern itself (gateway.subjects.matches). A publish costs one group_send
per token plus one (at most 17), whatever the number of subscribers; docs/gateway.md measures it.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import threading
import uuid
from typing import TYPE_CHECKING, Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction
from django.utils import timezone

if TYPE_CHECKING:
    from tenants.models import Tenant

logger = logging.getLogger(__name__)

SUBJECT_TOKEN = re.compile(r"^[A-Za-z0-9_-]+$")
# Channels refuses group names of 100 characters or more.
MAX_GROUP_LENGTH = 99
MESSAGE_TYPE = "tenant.event"


def _valid_tokens(subject: str) -> bool:
    return all(SUBJECT_TOKEN.match(token) for token in subject.split("."))


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
    tokens = subject.split(".")
    prefixes = [".".join(tokens[:length]) for length in range(len(tokens))]
    return [group_name(tenant_id, subject)] + [
        group_name(tenant_id, head, prefix=True) for head in prefixes
    ]


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


async def send(tenant_id: str, subject: str, message: dict[str, Any]) -> None:
    """Fan one event out to its groups (the only `group_send` of the project)."""
    layer = get_channel_layer()
    if layer is None:
        return
    await asyncio.gather(
        *(layer.group_send(group, message) for group in groups_for(tenant_id, subject))
    )


def publish_on_commit(tenant: Tenant, subject: str, data: dict[str, Any]) -> None:
    """Send `data` to the tenant's `subject` group once the current transaction commits."""
    tenant_id = str(tenant.public_id)
    groups_for(tenant_id, subject)  # an invalid subject fails now, in the caller, not later
    message = event_message(tenant_id, subject, data)

    def deliver() -> None:
        try:
            send_from_sync(tenant_id, subject, message)
        except Exception:  # the change is committed; a lost live event must not fail it
            logger.warning("could not publish %s for %s", subject, tenant_id, exc_info=True)

    transaction.on_commit(deliver)


_publisher: tuple[asyncio.AbstractEventLoop, threading.Thread] | None = None
_publisher_lock = threading.Lock()
PUBLISH_TIMEOUT_SECONDS = 5.0


def send_from_sync(tenant_id: str, subject: str, message: dict[str, Any]) -> None:
    """`send` from synchronous code (services): wait for the event to be handed to the layer.

    `async_to_sync` would run each publish in a fresh event loop, and channels-redis keeps its
    connections per loop: every publish would open new Redis connections (~6 ms). With the Redis
    layer, publishes go through one long-lived loop per process instead, reusing them. The
    in-memory layer (one process, development) is loop-bound and keeps `async_to_sync`.
    """
    from channels_redis.core import RedisChannelLayer

    if not isinstance(get_channel_layer(), RedisChannelLayer):
        async_to_sync(send)(tenant_id, subject, message)
        return
    future = asyncio.run_coroutine_threadsafe(send(tenant_id, subject, message), _publisher_loop())
    future.result(timeout=PUBLISH_TIMEOUT_SECONDS)


def _publisher_loop() -> asyncio.AbstractEventLoop:
    """This process's publishing loop, started on first use (after a server forks its workers)."""
    global _publisher
    with _publisher_lock:
        if _publisher is None or not _publisher[1].is_alive():
            loop = asyncio.new_event_loop()
            thread = threading.Thread(target=loop.run_forever, name="event-publisher", daemon=True)
            thread.start()
            _publisher = (loop, thread)
        return _publisher[0]

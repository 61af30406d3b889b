"""The WebSocket gateway: `/ws/events/` on an organization's host (wire format: docs/gateway.md).

Every database access runs in `database_sync_to_async` with the connection's tenant entered
inside the sync function (tenants.context), so a worker thread never reads with whatever schema
its connection had last. Outgoing frames go through a bounded queue drained by one writer task:
a subscriber that cannot keep up is disconnected (close code 4008) instead of slowing anyone.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
import uuid
from collections import OrderedDict
from typing import Any
from urllib.parse import urlsplit

from channels.consumer import get_handler_name
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from core import errors, metrics, strictjson
from core.actors import Actor
from credentials import services as credential_services
from credentials.api_keys import looks_like_key
from credentials.authentication import CredentialRefused, authenticate_credential
from gateway import services, subjects
from gateway.db import database_sync_to_async
from tenants import context, events, routing
from tenants.models import Tenant, TenantStatus

logger = logging.getLogger(__name__)

# Close codes (4000-4999 are the application's).
CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_NOT_FOUND = 4404
CLOSE_SLOW_CONSUMER = 4008
CLOSE_TOO_LARGE = 1009
CLOSE_TOO_MANY_REFUSALS = 4429
MAX_REFUSALS = 50
MAX_SUBSCRIPTIONS = 100
SEEN_IDS = 1024
# Publishes of one connection being admitted and sent at once (their replies still go out in
# order); past it, the connection's next frame waits.
MAX_PUBLISHES_IN_FLIGHT = 100


def _host(scope: dict[str, Any]) -> str:
    for name, value in scope.get("headers", []):
        if name == b"host":
            return value.decode("latin-1").rsplit(":", 1)[0].lower()
    return ""


def _header(scope: dict[str, Any], wanted: bytes) -> str:
    for name, value in scope.get("headers", []):
        if name == wanted:
            return value.decode("latin-1")
    return ""


def _resolve(host: str) -> Any:
    if not host or host == settings.PORTAL_DOMAIN:
        return None
    return routing.lookup(host)


def _same_origin(scope: dict[str, Any]) -> bool:
    """A browser's socket is authenticated by cookie only when opened by a page of this host:
    otherwise any site (another organization's included) could ride the user's session."""
    origin = _header(scope, b"origin")
    host = _header(scope, b"host").lower()
    return bool(origin) and urlsplit(origin).netloc.lower() == host


def _session_actor(tenant: Tenant, scope: dict[str, Any]) -> Actor | None:
    from http.cookies import SimpleCookie

    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY, load_backend
    from django.contrib.sessions.backends.db import SessionStore
    from django.utils.crypto import constant_time_compare

    cookie = SimpleCookie()
    try:
        cookie.load(_header(scope, b"cookie"))
    except Exception:
        return None
    morsel = cookie.get(settings.SESSION_COOKIE_NAME)
    if morsel is None or not _same_origin(scope):
        return None
    with context.tenant_context(tenant):
        session = SessionStore(session_key=morsel.value)
        try:
            user_id = session[SESSION_KEY]
            backend = load_backend(session[BACKEND_SESSION_KEY])
        except (KeyError, ImportError):
            return None
        user = backend.get_user(user_id)
        if user is None or not user.is_active:
            return None
        if tenant.require_two_factor and not user.two_factor_enabled:
            return None  # to set it up first, as every portal page says (accounts.middleware)
        stored = session.get(HASH_SESSION_KEY, "")
        if not constant_time_compare(stored, user.get_session_auth_hash()):
            return None
        return Actor.for_user(user)


def _credential_actor(
    tenant: Tenant, raw: str, scope: dict[str, Any] | None = None
) -> tuple[Actor | None, str, str]:
    with context.tenant_context(tenant):
        try:
            credential = authenticate_credential(raw, tenant)
        except CredentialRefused as error:
            try:
                credential_services.authentication_failure_record(
                    actor=Actor.anonymous(scope=scope),
                    scheme="api_key" if looks_like_key(raw) else "jwt",
                    code=error.error_code,
                )
            except errors.DomainError as throttled:  # too many failures from here: 429 / 503
                return None, throttled.code, throttled.message
            return None, error.error_code, str(error.detail)
        return credential.actor(), "", ""


def _status_now(tenant: Tenant) -> str | None:
    """The organization's status in the database (None once deleted): a control event can
    arrive before this process's routing cache has heard of the change."""
    with context.public_context():
        return Tenant.objects.filter(pk=tenant.pk).values_list("status", flat=True).first()


def _recheck(host: str, scope: dict[str, Any], token: str | None) -> tuple[Actor | None, str]:
    """The connection's credential again, against the organization as it is now: a revoked
    key, a deactivated user, an ended session or a suspended organization ends the socket."""
    tenant = _resolve(host)
    if tenant is None or _status_now(tenant) != TenantStatus.ACTIVE:
        return None, "organization_unavailable"
    if token is None:
        actor = _session_actor(tenant, scope)
        return actor, "" if actor is not None else "session_ended"
    actor, code, _ = _credential_actor(tenant, token)
    return actor, code


def _in_tenant(tenant: Tenant, function: Any, *args: Any, **kwargs: Any) -> Any:
    with context.tenant_context(tenant):
        return function(*args, **kwargs)


_last_frame: tuple[Any, str] = (None, "")


def _event_frame(message: dict[str, Any]) -> str:
    """The frame of an event, the same for every socket it goes to: encoded once per event (the
    last one is kept), not once per subscriber."""
    global _last_frame
    if _last_frame[0] != message["id"]:
        frame = {
            "subject": message["subject"],
            "tenant": message["tenant"],
            "timestamp": message["timestamp"],
            "id": message["id"],
            "data": message["data"],
        }
        _last_frame = (message["id"], json.dumps(frame, separators=(",", ":")))
    return _last_frame[1]


class EventsConsumer(AsyncWebsocketConsumer):
    """One client: authenticate, then subscribe, unsubscribe, publish; runtimes also attach."""

    tenant: Tenant | None = None
    actor: Actor | None = None

    async def dispatch(self, message: dict[str, Any]) -> None:
        """Channels' dispatch without its hop to the database thread before every message
        (channels 4.2+ runs `close_old_connections` there first): with it, every frame received
        and every event delivered, to each socket, queued in the process's one database thread,
        1,000 hops for one event to 1,000 sockets. This consumer reaches the database only
        through `database_sync_to_async`, which closes old connections around each call."""
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    async def connect(self) -> None:
        self.tenant = await database_sync_to_async(_resolve)(_host(self.scope))
        if self.tenant is None:
            await self.close(code=CLOSE_NOT_FOUND)
            return
        if self.tenant.status != TenantStatus.ACTIVE:
            await self.close(code=CLOSE_FORBIDDEN)
            return
        self.tenant_id = str(self.tenant.public_id)
        self.connection_id = uuid.uuid4().hex
        self.patterns: dict[str, str] = {}  # pattern -> its group
        self.group_refs: dict[str, int] = {}  # group -> patterns using it
        self.seen: OrderedDict[str, None] = OrderedDict()
        self.instance_id: str | None = None
        self.last_heartbeat = float("-inf")
        self.refusals = 0
        self.agent_id: str | None = None
        self.outbox: asyncio.Queue[str] = asyncio.Queue(maxsize=settings.GATEWAY_QUEUE_SIZE)
        self.closing = False
        self.recheck_now = asyncio.Event()
        self.in_control_group = False
        self.tickets: dict[str, Any] = {}  # billing's ticket for this connection's messages
        self.publish_slots = asyncio.Semaphore(MAX_PUBLISHES_IN_FLIGHT)
        self.last_publish: asyncio.Future | None = None  # replied to when it is done
        self.last_handed: asyncio.Future | None = None  # done once given to the layer
        await self.accept()
        metrics.WEBSOCKET_CONNECTIONS.inc()
        self.counted = True
        self.writer = asyncio.ensure_future(self._write())
        self.token: str | None = None  # kept in memory only, to check it again (_recheck)
        if _header(self.scope, b"cookie"):
            await self._join_control_group()
        self.actor = await database_sync_to_async(_session_actor)(self.tenant, self.scope)
        if self.actor is not None:
            self._emit({"op": "ready", "tenant": self.tenant_id, "via": "session"})
            self.recheck_timer = asyncio.ensure_future(self._recheck_loop())
        else:
            await self._leave_control_group()
            self.auth_timer = asyncio.ensure_future(self._auth_deadline())

    async def _join_control_group(self) -> None:
        """Join before the credential is checked: a revocation committed after that check is
        then announced to this socket, whatever the order of the two."""
        if not self.in_control_group:
            self.in_control_group = True
            await self.channel_layer.group_add(
                events.control_group(self.tenant_id), self.channel_name
            )

    async def _leave_control_group(self) -> None:
        if self.in_control_group:
            self.in_control_group = False
            await self.channel_layer.group_discard(
                events.control_group(self.tenant_id), self.channel_name
            )

    # --- Outgoing ------------------------------------------------------------------------------

    async def _write(self) -> None:
        while True:
            frame = await self.outbox.get()
            await self.send(text_data=frame)
            metrics.WEBSOCKET_FRAMES.labels("out", "all").inc()

    def _emit(self, payload: dict[str, Any] | str) -> None:
        if self.closing:
            return
        if not isinstance(payload, str):
            payload = json.dumps(payload, separators=(",", ":"))
        try:
            self.outbox.put_nowait(payload)
        except asyncio.QueueFull:
            logger.warning("gateway: slow consumer %s disconnected", self.connection_id)
            self.closing = True
            asyncio.ensure_future(self._close_slow())

    async def _close_slow(self) -> None:
        self.writer.cancel()
        await self.close(code=CLOSE_SLOW_CONSUMER)

    def _error(self, code: str, message: str, ref: Any = None, **extra: Any) -> None:
        body: dict[str, Any] = {"error": {"code": code, "message": message, **extra}}
        if ref is not None:
            body["ref"] = ref
        self._emit(body)

    async def _auth_deadline(self) -> None:
        await asyncio.sleep(settings.GATEWAY_AUTH_TIMEOUT_SECONDS)
        if self.actor is None:
            self._error("auth_timeout", "Authenticate first: send {op: auth, token}.")
            await self._flush_and_close(CLOSE_UNAUTHENTICATED)

    async def _flush_and_close(self, code: int) -> None:
        self.closing = True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._drain(), timeout=2)
        self.writer.cancel()
        await self.close(code=code)

    async def _drain(self) -> None:
        while not self.outbox.empty():
            await asyncio.sleep(0.005)

    # --- Incoming ------------------------------------------------------------------------------

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if self.closing:
            return
        raw = text_data if text_data is not None else bytes_data or b""
        size = len(raw.encode()) if isinstance(raw, str) else len(raw)
        if size > settings.GATEWAY_MAX_MESSAGE_BYTES:
            self._error("message_too_large", "A frame has at most 64 KB.")
            await self._flush_and_close(CLOSE_TOO_LARGE)
            return
        try:
            message = strictjson.loads(raw)
        except strictjson.InvalidJson as error:
            # The socket stays open: a bad frame is the client's mistake, answered like a 400.
            self._error("parse_error", f"Bad JSON: {error.message}", reason=error.code)
            return
        if not isinstance(message, dict) or not isinstance(message.get("op"), str):
            self._error("bad_request", "Every frame is an object with an `op`.")
            return
        ref = message.get("ref")
        if ref is not None and (not isinstance(ref, str | int) or len(str(ref)) > 64):
            ref = None
        op = message["op"]
        metrics.WEBSOCKET_FRAMES.labels("in", metrics.frame_op(op)).inc()
        if self.actor is None:
            if op != "auth":
                self._error("unauthenticated", "Authenticate first.", ref)
                await self._flush_and_close(CLOSE_UNAUTHENTICATED)
                return
            await self._authenticate(message, ref)
            return
        handler = {
            "subscribe": self._subscribe,
            "unsubscribe": self._unsubscribe,
            "publish": self._publish,
            "attach": self._attach,
            "heartbeat": self._heartbeat,
            "config": self._config,
            "detach": self._detach,
            "ping": self._ping,
        }.get(op)
        if handler is None:
            await self._publishes_done()
            self._error("unknown_op", f"Unknown op “{op[:32]}”.", ref)
            return
        if op != "publish":
            await self._publishes_done()  # every reply in the order of the frames
        await handler(message, ref)

    async def _authenticate(self, message: dict[str, Any], ref: Any) -> None:
        token = message.get("token")
        if not isinstance(token, str) or not token or len(token) > 4096:
            self._error("credentials_malformed", "Send {op: auth, token: <jwt or api key>}.", ref)
            await self._flush_and_close(CLOSE_UNAUTHENTICATED)
            return
        await self._join_control_group()
        actor, code, text = await database_sync_to_async(_credential_actor)(
            self.tenant, token, self.scope
        )
        if actor is None:
            await self._leave_control_group()
            self._error(code, text, ref)
            await self._flush_and_close(CLOSE_UNAUTHENTICATED)
            return
        self.actor, self.token = actor, token
        timer = getattr(self, "auth_timer", None)
        if timer is not None:
            timer.cancel()
        self._emit({"op": "ready", "tenant": self.tenant_id, "via": "token", "ref": ref})
        self.recheck_timer = asyncio.ensure_future(self._recheck_loop())

    async def _recheck_loop(self) -> None:
        """Check the credential again on every control event of the organization (a revocation
        was just committed), and every GATEWAY_RECHECK_SECONDS as a backstop (a lost event, an
        expiry). Events arriving during a check make one more check, not one each. The periodic
        wait is drawn between half and all of GATEWAY_RECHECK_SECONDS: sockets opened together
        (a fleet reconnecting) would otherwise all check at once, queueing in the one database
        thread in front of everything else of the process."""
        while True:
            wait = settings.GATEWAY_RECHECK_SECONDS * random.uniform(0.5, 1.0)  # noqa: S311
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.recheck_now.wait(), timeout=wait)
            self.recheck_now.clear()
            actor, code = await database_sync_to_async(_recheck)(
                _host(self.scope), self.scope, self.token
            )
            if actor is None:
                self._error(code or "credential_revoked", "The credential is no longer valid.")
                await self._flush_and_close(CLOSE_UNAUTHENTICATED)
                return
            self.actor = actor  # a role change applies to the following frames

    async def _run_sync(self, function: Any, *args: Any, **kwargs: Any) -> Any:
        """`function` in the database thread, in the tenant's context."""
        return await database_sync_to_async(_in_tenant)(self.tenant, function, *args, **kwargs)

    async def _call(self, function: Any, ref: Any, **kwargs: Any) -> tuple[bool, Any]:
        """Run a service in the tenant's context; a refusal becomes an error frame."""
        try:
            result = await self._run_sync(function, **kwargs)
        except Exception as error:
            await self._refused(error, ref)
            return False, None
        return True, result

    async def _refused(self, error: Exception, ref: Any) -> None:
        """The error frame of a refusal; anything else is raised again."""
        problem = errors.describe(error)
        if problem is None:
            raise error
        retry_after = getattr(error, "retry_after", None)
        extra = {"retry_after": retry_after} if retry_after else {}
        if isinstance(error, errors.UsageExhausted):
            extra["detail"] = problem.detail  # the quota or budget, named as over HTTP
        self._error(problem.code, problem.message, ref, **extra)
        if isinstance(error, errors.DomainError):
            # Each refusal writes an audit row: a client looping on refused frames is cut off.
            self.refusals += 1
            if self.refusals >= MAX_REFUSALS:
                self._error("too_many_refusals", f"{MAX_REFUSALS} refused frames: goodbye.")
                await self._flush_and_close(CLOSE_TOO_MANY_REFUSALS)

    async def _subscribe(self, message: dict[str, Any], ref: Any) -> None:
        ok, pattern = await self._call(
            services.subscription_check, ref, actor=self.actor, pattern=message.get("subject")
        )
        if not ok:
            return
        if pattern not in self.patterns:
            if len(self.patterns) >= MAX_SUBSCRIPTIONS:
                self._error("too_many_subscriptions", f"At most {MAX_SUBSCRIPTIONS}.", ref)
                return
            if subjects.is_literal(pattern):
                group = events.group_name(self.tenant_id, pattern)
            else:
                group = events.group_name(
                    self.tenant_id, subjects.literal_head(pattern), prefix=True
                )
            self.patterns[pattern] = group
            self.group_refs[group] = self.group_refs.get(group, 0) + 1
            if self.group_refs[group] == 1:
                await self.channel_layer.group_add(group, self.channel_name)
        self._emit({"op": "subscribed", "subject": pattern, "ref": ref})

    async def _unsubscribe(self, message: dict[str, Any], ref: Any) -> None:
        pattern = message.get("subject")
        group = self.patterns.pop(pattern, None) if isinstance(pattern, str) else None
        if group is not None:
            self.group_refs[group] -= 1
            if self.group_refs[group] == 0:
                del self.group_refs[group]
                await self.channel_layer.group_discard(group, self.channel_name)
        self._emit({"op": "unsubscribed", "subject": pattern, "ref": ref})

    async def _publish(self, message: dict[str, Any], ref: Any) -> None:
        """Admit the message now, beside this connection's earlier publishes still in flight
        (their Lua calls reach Redis in order: billing.message_admit_async); hand it to the
        layer once the earlier ones were, and reply once they replied: the events and the
        replies of one connection keep the order of its frames."""
        await self.publish_slots.acquire()
        admitted = asyncio.ensure_future(
            services.message_publish_async(
                tenant=self.tenant,
                actor=self.actor,
                subject=message.get("subject"),
                data=message.get("data"),
                connection_id=self.connection_id,
                agent_id=self.agent_id,
                tickets=self.tickets,
                run_sync=self._run_sync,
            )
        )
        handed = asyncio.get_running_loop().create_future()
        previous, previous_handed = self.last_publish, self.last_handed
        self.last_handed = handed
        self.last_publish = asyncio.ensure_future(
            self._publish_in_order(admitted, previous, previous_handed, handed, ref)
        )

    async def _publish_in_order(
        self,
        admitted: asyncio.Future,
        previous: asyncio.Future | None,
        previous_handed: asyncio.Future | None,
        handed: asyncio.Future,
        ref: Any,
    ) -> None:
        try:
            sending = refusal = None
            try:
                if previous_handed is not None:
                    await previous_handed
                try:
                    layer_message = await admitted
                except Exception as error:
                    refusal = error
                else:
                    # Scheduled now, in order: the layer queues its PUBLISHes in that order.
                    sending = asyncio.ensure_future(
                        events.send(self.tenant_id, layer_message["subject"], layer_message)
                    )
            finally:
                handed.set_result(None)
            if previous is not None:
                await previous
            if refusal is not None:
                await self._refused(refusal, ref)
                return
            await sending
            if ref is not None:
                self._emit({"op": "ack", "ref": ref, "id": layer_message["id"]})
        except Exception:
            # What a frame's handler raising did before: the socket ends (1011).
            logger.exception("gateway: publish failed on %s", self.connection_id)
            self.closing = True
            await self.close(code=1011)
        finally:
            self.publish_slots.release()

    async def _publishes_done(self) -> None:
        """Wait until this connection's publishes in flight have replied."""
        if self.last_publish is not None and not self.last_publish.done():
            with contextlib.suppress(Exception):
                await asyncio.shield(self.last_publish)

    async def _attach(self, message: dict[str, Any], ref: Any) -> None:
        ok, view = await self._call(
            services.instance_attach, ref, actor=self.actor, instance_id=message.get("instance")
        )
        if not ok:
            return
        self.instance_id, self.agent_id = view["instance"], view["agent"]["id"]
        self._emit({"op": "attached", "ref": ref, **view})

    async def _require_attached(self, ref: Any) -> bool:
        if self.instance_id is None:
            self._error("not_attached", "Attach to an instance first.", ref)
            return False
        return True

    async def _heartbeat(self, message: dict[str, Any], ref: Any) -> None:
        if not await self._require_attached(ref):
            return
        # A heartbeat writes its instance row (agents' instance_report, which leaves the pool
        # row alone): a runtime beating in a loop must still not flood the database.
        now = time.monotonic()
        if now - self.last_heartbeat < settings.GATEWAY_MIN_HEARTBEAT_SECONDS:
            self._error("rate_limited", "At most one heartbeat per second.", ref, retry_after=1)
            return
        self.last_heartbeat = now
        ok, instance = await self._call(
            services.heartbeat_record,
            ref,
            actor=self.actor,
            instance_id=self.instance_id,
            metrics=message.get("metrics"),
        )
        if ok:
            self._emit({"op": "heartbeat", "ref": ref, "status": instance.status})

    async def _config(self, message: dict[str, Any], ref: Any) -> None:
        if not await self._require_attached(ref):
            return
        ok, view = await self._call(
            services.config_for, ref, actor=self.actor, instance_id=self.instance_id
        )
        if ok:
            self._emit({"op": "config", "ref": ref, "config": view["config"]})

    async def _detach(self, message: dict[str, Any], ref: Any) -> None:
        if not await self._require_attached(ref):
            return
        ok, instance = await self._call(
            services.instance_detach,
            ref,
            actor=self.actor,
            instance_id=self.instance_id,
            status=message.get("status", "stopped"),
        )
        if ok:
            self.instance_id = self.agent_id = None
            self._emit({"op": "detached", "ref": ref, "status": instance.status})

    async def _ping(self, message: dict[str, Any], ref: Any) -> None:
        self._emit({"op": "pong", "ref": ref})

    # --- Events from the channel layer ---------------------------------------------------------

    async def tenant_event(self, message: dict[str, Any]) -> None:
        if message.get("tenant") != self.tenant_id or self.actor is None:
            return  # never: group names carry the tenant; kept as a second lock
        event_id = message.get("id")
        if event_id in self.seen:
            return  # delivered through another of this connection's groups
        subject = message["subject"]
        if not any(subjects.matches(pattern, subject) for pattern in self.patterns):
            return
        self.seen[event_id] = None
        if len(self.seen) > SEEN_IDS:
            self.seen.popitem(last=False)
        self._emit(_event_frame(message))

    async def tenant_control(self, message: dict[str, Any]) -> None:
        """A server-only control event (tenants.events.recheck_on_commit): check again now."""
        if message.get("tenant") != getattr(self, "tenant_id", None):
            return  # never: the group name carries the tenant; kept as a second lock
        self.recheck_now.set()

    async def disconnect(self, code: int) -> None:
        if getattr(self, "counted", False):
            self.counted = False
            metrics.WEBSOCKET_CONNECTIONS.dec()
        for timer in ("writer", "auth_timer", "recheck_timer"):
            task = getattr(self, timer, None)
            if task is not None:
                task.cancel()
        for group in list(getattr(self, "group_refs", {})):
            await self.channel_layer.group_discard(group, self.channel_name)
        if getattr(self, "in_control_group", False):
            await self._leave_control_group()

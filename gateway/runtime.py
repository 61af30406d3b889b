"""The reference agent runtime: serves one agent instance over the gateway (`manage.py run_agent`).

It connects to `/ws/events/`, authenticates with an API key (first message, never in the URL),
attaches to its instance (which marks it running and returns the resolved config), subscribes to
its tasks and to `config.changed`, sends a heartbeat with metrics every few seconds, runs tasks
(`echo`, `sleep`, and `tool`, which runs one of the agent's custom tools by name through the API:
the sandbox is on the platform) and publishes each result on `agents.result.<task id>`. When the
connection drops it reconnects with exponential backoff and jitter, and attaches and subscribes
again.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import resource
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import websockets

logger = logging.getLogger("agentplane.runtime")

MAX_SLEEP_SECONDS = 60.0
CONFIG_KEYS_FOR = ("agents.defaults",)


class Stop(Exception):
    """The platform stopped this instance (or refused it): do not reconnect."""


@dataclass
class Endpoint:
    """Where the organization's host is, and how to reach it (`*.localhost` -> 127.0.0.1)."""

    url: str

    @property
    def parts(self):
        return urlsplit(self.url)

    @property
    def host_header(self) -> str:
        return self.parts.netloc

    @property
    def address(self) -> tuple[str, int]:
        hostname = self.parts.hostname or "localhost"
        port = self.parts.port or (443 if self.parts.scheme == "https" else 80)
        if hostname == "localhost" or hostname.endswith(".localhost"):
            hostname = "127.0.0.1"
        return hostname, port

    @property
    def ws_url(self) -> str:
        scheme = "wss" if self.parts.scheme == "https" else "ws"
        return f"{scheme}://{self.parts.netloc}/ws/events/"

    def post(self, path: str, key: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._call("POST", path, key, json.dumps(body).encode())

    def get(self, path: str, key: str) -> dict[str, Any]:
        return self._call("GET", path, key, None)

    def _call(self, method: str, path: str, key: str, data: bytes | None) -> dict[str, Any]:
        host, port = self.address
        scheme = self.parts.scheme or "http"
        if scheme not in {"http", "https"}:
            raise ValueError(f"the portal URL must be http or https, not {scheme!r}")
        headers = {"Host": self.host_header, "Authorization": f"Api-Key {key}"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(  # noqa: S310 (the operator's own URL)
            f"{scheme}://{host}:{port}{path}", data=data, method=method, headers=headers
        )
        # http(s) only, checked above.
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 # nosec B310
            return json.loads(response.read())


@dataclass
class Stats:
    tasks_done: int = 0
    durations_ms: list[float] = field(default_factory=list)
    cpu_mark: tuple[float, float] = field(
        default_factory=lambda: (time.monotonic(), time.process_time())
    )

    def sample(self, queue_depth: int) -> dict[str, float | int]:
        now, cpu = time.monotonic(), time.process_time()
        wall = max(now - self.cpu_mark[0], 1e-6)
        cpu_percent = max(0.0, (cpu - self.cpu_mark[1]) / wall * 100)
        self.cpu_mark = (now, cpu)
        recent, self.durations_ms = self.durations_ms, []
        return {
            "cpu_percent": round(cpu_percent, 2),
            "memory_mb": round(_resident_mb(), 1),
            "queue_depth": queue_depth,
            "response_ms": round(sum(recent) / len(recent), 2) if recent else 0.0,
            "tasks_done": self.tasks_done,
        }


def _resident_mb() -> float:
    try:
        with open("/proc/self/statm") as statm:
            pages = int(statm.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 1024 / 1024
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


ToolCaller = Callable[[str, Any], Awaitable[dict[str, Any]]]


async def run_task(
    task: dict[str, Any], tools: list[str], call_tool: ToolCaller | None = None
) -> dict[str, Any]:
    """Execute one task; the result (or an error) to publish. `call_tool(name, input)` runs one
    of the agent's custom tools on the platform (the sandbox is there, never here)."""
    kind = task.get("kind")
    if kind == "echo":
        return {"status": "done", "output": task.get("input")}
    if kind == "sleep":
        seconds = task.get("seconds", 1)
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0:
            return {"status": "failed", "error": {"code": "invalid", "message": "Bad seconds."}}
        await asyncio.sleep(min(float(seconds), MAX_SLEEP_SECONDS))
        return {"status": "done", "output": {"slept": min(float(seconds), MAX_SLEEP_SECONDS)}}
    if kind == "tool":
        name = str(task.get("tool", ""))[:64]
        listed = {entry.split("@", 1)[0] for entry in tools}
        if name not in listed or call_tool is None:
            return {
                "status": "failed",
                "error": {"code": "no_such_tool", "message": f"This agent has no tool “{name}”."},
            }
        run = await call_tool(name, task.get("input"))
        if run.get("status") == "ok":
            return {
                "status": "done",
                "output": run.get("output"),
                "tool": {key: run.get(key) for key in ("version", "duration_ms", "logs")},
            }
        error = run.get("error") or {}
        return {
            "status": "failed",
            "error": {"code": run.get("status", "error"), "message": error.get("message", "")},
            "tool": {key: run.get(key) for key in ("version", "duration_ms", "logs")},
        }
    return {
        "status": "failed",
        "error": {"code": "unknown_kind", "message": f"Unknown task kind {str(kind)[:32]!r}."},
    }


class AgentRuntime:
    def __init__(
        self,
        *,
        url: str,
        key: str,
        instance_id: str,
        heartbeat_seconds: float = 5.0,
        max_backoff_seconds: float = 30.0,
        on_event: Callable[[str, dict[str, Any]], None] | None = None,
    ) -> None:
        self.endpoint = Endpoint(url)
        self.key = key
        self.instance_id = instance_id
        self.heartbeat_seconds = max(1.0, heartbeat_seconds)  # the gateway refuses faster
        self.max_backoff_seconds = max_backoff_seconds
        self.on_event = on_event or (lambda kind, detail: None)
        self.config: dict[str, Any] = {}
        self.secrets: dict[str, str] = {}
        self.agent: dict[str, Any] = {}
        self.stats = Stats()
        self.connections = 0
        self.leaving = False
        self.stopping = asyncio.Event()

    @classmethod
    def for_new_instance(cls, *, url: str, key: str, agent_id: str, **options: Any):
        """Request a new instance of the agent over the API (quota-checked), then serve it."""
        created = Endpoint(url).post(f"/api/v1/agents/{agent_id}/instances/", key, {})
        return cls(url=url, key=key, instance_id=created["id"], **options)

    @classmethod
    def for_agent(cls, *, url: str, key: str, agent_id: str, **options: Any):
        """Serve the agent's oldest pending instance (one started from the portal or the API and
        waiting for a runtime); request a new one only when none is waiting."""
        endpoint = Endpoint(url)
        pending = endpoint.get(f"/api/v1/agents/{agent_id}/instances/?status=pending", key)
        waiting = sorted(pending.get("results", []), key=lambda row: row.get("requested_at", ""))
        if waiting:
            return cls(url=url, key=key, instance_id=waiting[0]["id"], **options)
        return cls.for_new_instance(url=url, key=key, agent_id=agent_id, **options)

    async def run_forever(self) -> None:
        attempt = 0
        while not self.stopping.is_set():
            try:
                await self._session()
                attempt = 0
            except Stop as stop:
                logger.warning("runtime stopping: %s", stop)
                self.on_event("stopped", {"reason": str(stop)})
                return
            except (OSError, websockets.ConnectionClosed, TimeoutError) as error:
                self.on_event("disconnected", {"error": type(error).__name__})
                logger.warning("connection lost (%s); reconnecting", type(error).__name__)
            if self.stopping.is_set():
                return
            attempt += 1
            delay = min(self.max_backoff_seconds, 0.5 * 2 ** min(attempt, 10))
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))  # noqa: S311 (jitter)

    async def _session(self) -> None:
        host, port = self.endpoint.address
        async with websockets.connect(
            self.endpoint.ws_url, host=host, port=port, open_timeout=10, max_size=2**20
        ) as socket:
            self.socket = socket
            await self._request({"op": "auth", "token": self.key}, expect="ready")
            attached = await self._request(
                {"op": "attach", "instance": self.instance_id}, expect="attached"
            )
            self.agent, self.config = attached["agent"], attached["config"]
            # The referenced secrets' values: kept in memory for the handler, never logged.
            self.secrets = dict(attached.get("secrets") or {})
            for subject in ("agents.task", f"agents.{self.agent['id']}.task", "config.changed"):
                await self._request({"op": "subscribe", "subject": subject}, expect="subscribed")
            self.connections += 1
            self.leaving = False
            self.on_event("attached", {"config": self.config, "connections": self.connections})
            logger.info("attached to instance %s of %s", self.instance_id, self.agent["name"])
            tasks: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
            workers = [
                asyncio.ensure_future(self._heartbeats(tasks)),
                asyncio.ensure_future(self._work(tasks)),
                asyncio.ensure_future(self.stopping.wait()),
            ]
            reader = asyncio.ensure_future(self._read(tasks))
            try:
                done, _ = await asyncio.wait([reader, *workers], return_when="FIRST_COMPLETED")
                if self.stopping.is_set():
                    for task in [reader, *workers]:
                        task.cancel()
                    await self._request({"op": "detach", "status": "stopped"}, expect="detached")
                    return
                for finished in done:
                    finished.result()  # re-raise what ended the session
            finally:
                for task in [reader, *workers]:
                    task.cancel()

    async def _send(self, frame: dict[str, Any]) -> None:
        await self.socket.send(json.dumps(frame))

    async def _request(self, frame: dict[str, Any], *, expect: str) -> dict[str, Any]:
        frame = {**frame, "ref": uuid.uuid4().hex[:8]}
        await self._send(frame)
        while True:
            reply = json.loads(await asyncio.wait_for(self.socket.recv(), timeout=15))
            if reply.get("ref") != frame["ref"]:
                continue  # nothing else is subscribed yet
            if "error" in reply:
                code = reply["error"]["code"]
                if code in {"not_found", "invalid_transition", "permission_denied"} or (
                    code.startswith("api_key") or code.startswith("token")
                ):
                    raise Stop(f"{frame['op']} refused: {code}")
                raise OSError(f"{frame['op']} refused: {code}")
            if reply.get("op") == expect:
                return reply

    async def _read(self, tasks: asyncio.Queue) -> None:
        async for raw in self.socket:
            frame = json.loads(raw)
            subject = frame.get("subject")
            if "error" in frame:
                code = frame["error"].get("code")
                logger.warning("gateway refused: %s", code)
                if code == "invalid_transition" and not self.leaving:
                    # Stopped from the portal: confirm, then leave once the server has it.
                    self.leaving = True
                    await self._send({"op": "detach", "status": "stopped"})
                continue  # while leaving, late heartbeats are refused too: wait for `detached`
            if frame.get("op") == "detached":
                raise Stop(f"the instance is {frame.get('status')}")
            if frame.get("op") == "config":
                self.config = frame["config"]
                self.on_event("config", {"config": self.config})
                continue
            if frame.get("op") == "heartbeat" and frame.get("status") not in {"running", None}:
                raise Stop(f"the instance is {frame['status']}")
            if subject in {"agents.task", f"agents.{self.agent['id']}.task"}:
                await tasks.put(frame["data"])
            elif subject == "config.changed":
                key = (frame.get("data") or {}).get("key")
                if key in {*CONFIG_KEYS_FOR, f"agents.{self.agent['type']}"}:
                    await self._send({"op": "config"})

    async def _call_tool(self, name: str, value: Any) -> dict[str, Any]:
        """Run one of this agent's tools over the API (the platform checks the agent lists it)."""
        path = f"/api/v1/agents/{self.agent['id']}/tools/{urllib.parse.quote(name)}/runs/"
        try:
            return await asyncio.to_thread(self.endpoint.post, path, self.key, {"input": value})
        except urllib.error.HTTPError as error:
            try:
                body = json.loads(error.read())["error"]
            except (ValueError, KeyError, TypeError):
                body = {"code": f"http_{error.code}", "message": str(error.reason)}
            return {"status": body.get("code", "error"), "error": body}

    async def _heartbeats(self, tasks: asyncio.Queue) -> None:
        while True:
            await self._send({"op": "heartbeat", "metrics": self.stats.sample(tasks.qsize())})
            await asyncio.sleep(self.heartbeat_seconds)

    async def _work(self, tasks: asyncio.Queue) -> None:
        while True:
            task = await tasks.get()
            started = time.monotonic()
            result = await run_task(task, self.agent.get("tools", []), self._call_tool)
            duration = (time.monotonic() - started) * 1000
            self.stats.tasks_done += 1
            self.stats.durations_ms.append(duration)
            task_id = str(task.get("id", ""))[:64] or "unknown"
            safe_id = "".join(c for c in task_id if c.isalnum() or c in "-_") or "unknown"
            await self._send(
                {
                    "op": "publish",
                    "subject": f"agents.result.{safe_id}",
                    "data": {
                        "task": task_id,
                        "agent": self.agent["id"],
                        "instance": self.instance_id,
                        "duration_ms": round(duration, 2),
                        **result,
                    },
                }
            )
            self.on_event("task", {"task": task_id, **result})

"""The pool of sandbox worker processes (tools.worker) and one run on one of them.

The web process never runs tenant code: it hands a run to an idle worker and waits, answering the
worker's host API calls itself (so the organization and the permissions they act with come from
the run, never from the sandbox). Backstops here, beside the worker's own limits:
- the deadline: a run not done by `timeout_ms` + `KILL_GRACE_MS` has its worker killed (a hang
  inside a V8 builtin, or a microtask loop the isolate's termination did not reach);
- memory: the worker's resident size is watched during the run, and a worker past its budget is
  killed (`memory_limit`); a worker that dies with V8's "out of memory" is reported the same way;
- a worker whose run timed out, ran out of memory or crashed is never reused: it is replaced.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import os
import queue
import select
import signal
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger("agentplane.tools")

HEADER = struct.Struct(">I")
KILL_GRACE_MS = 1000
READY_TIMEOUT_S = 15.0
MAX_FRAME = 32 * 1024 * 1024
WATCH_INTERVAL_S = 0.05
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
PROJECT_ROOT = Path(__file__).resolve().parent.parent

# A host call: (function name, JSON arguments) -> JSON value; raises HostError to refuse.
HostHandler = Callable[[str, Any], Any]


class HostError(Exception):
    """A host API call refused or failed: the tool sees an Error with this code and message."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class WorkerUnavailable(Exception):
    """No worker could be had in time (all busy, or none would start)."""


@dataclass
class Job:
    code: str
    input: Any
    timeout_ms: int
    memory_bytes: int
    functions: list[str]
    max_output: int
    max_logs: int
    max_call_bytes: int
    max_calls: int
    check_only: bool = False  # parse the code, call nothing (the compile check on save)

    def frame(self) -> dict[str, Any]:
        return {"op": "run", **self.__dict__}


class WorkerProcess:
    """One `python -m tools.worker` child, its private pipes and the tail of its stderr."""

    def __init__(self, *, heap_mb: int, data_mb: int) -> None:
        to_worker_r, to_worker_w = os.pipe()
        from_worker_r, from_worker_w = os.pipe()
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LANG": "C.UTF-8",
            "PYTHONPATH": str(PROJECT_ROOT),
            "TOOLS_WORKER_HEAP_MB": str(heap_mb),
            "TOOLS_WORKER_DATA_MB": str(data_mb),
        }
        self.process = subprocess.Popen(  # noqa: S603 (our own interpreter and module)
            [sys.executable, "-s", "-m", "tools.worker", str(to_worker_r), str(from_worker_w)],
            pass_fds=(to_worker_r, from_worker_w),
            cwd=PROJECT_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        os.close(to_worker_r)
        os.close(from_worker_w)
        self.writer = os.fdopen(to_worker_w, "wb", buffering=0)
        self.read_fd = from_worker_r
        self.buffer = b""
        self.stderr_tail: collections.deque[str] = collections.deque(maxlen=40)
        self.runs = 0
        self.closed = False
        self.started = time.monotonic()
        threading.Thread(target=self._drain_stderr, daemon=True).start()
        ready = self._next_frame(time.monotonic() + READY_TIMEOUT_S)
        if not ready or ready.get("op") != "ready":
            self.kill()
            raise WorkerUnavailable("the sandbox worker did not start")
        self.baseline_rss = self.rss()

    @property
    def pid(self) -> int:
        return self.process.pid

    def _drain_stderr(self) -> None:
        stream = self.process.stderr
        assert stream is not None
        for raw in stream:
            line = raw.decode("utf-8", "replace").rstrip()
            self.stderr_tail.append(line)
            logger.warning("sandbox worker %s: %s", self.process.pid, line[:500])

    def is_alive(self) -> bool:
        return self.process.poll() is None

    def rss(self) -> int:
        try:
            with open(f"/proc/{self.process.pid}/statm") as statm:
                return int(statm.read().split()[1]) * PAGE_SIZE
        except (OSError, ValueError, IndexError):
            return 0

    def kill(self) -> None:
        """Kill the worker and close its pipes (once: a closed descriptor's number is reused)."""
        if self.closed:
            return
        self.closed = True
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:  # pragma: no cover (SIGKILL is not refused)
            logger.error("sandbox worker %s did not die", self.process.pid)
        for closer in (self.writer.close, lambda: os.close(self.read_fd)):
            with contextlib.suppress(OSError):
                closer()

    def send(self, frame: dict[str, Any]) -> None:
        body = json.dumps(frame, separators=(",", ":")).encode()
        self.writer.write(HEADER.pack(len(body)) + body)

    def _next_frame(self, deadline: float, watch: Callable[[], None] | None = None):
        """The next frame, or None at EOF or at the deadline (`watch` runs between waits)."""
        while True:
            if len(self.buffer) >= HEADER.size:
                (size,) = HEADER.unpack(self.buffer[: HEADER.size])
                if size > MAX_FRAME:
                    raise ValueError("frame too large")
                if len(self.buffer) >= HEADER.size + size:
                    body = self.buffer[HEADER.size : HEADER.size + size]
                    self.buffer = self.buffer[HEADER.size + size :]
                    return json.loads(body)
            left = deadline - time.monotonic()
            if left <= 0 or self.closed:
                return None
            ready, _, _ = select.select([self.read_fd], [], [], min(left, WATCH_INTERVAL_S))
            if watch is not None:
                watch()
            if self.closed:
                return None
            if ready:
                chunk = os.read(self.read_fd, 1 << 20)
                if not chunk:
                    return None
                self.buffer += chunk

    def execute(self, job: Job, host: HostHandler, *, memory_limit_bytes: int) -> dict[str, Any]:
        """Run `job` here; the worker's `done` frame, or one describing how the backstop ended it.
        `healthy` in the answer says whether this worker may serve another run."""
        self.runs += 1
        self.baseline_rss = self.rss()
        started = time.monotonic()
        deadline = started + (job.timeout_ms + KILL_GRACE_MS) / 1000
        over_memory = False

        def watch() -> None:
            nonlocal over_memory
            if not over_memory and self.rss() - self.baseline_rss > memory_limit_bytes:
                over_memory = True
                self.kill()

        try:
            self.send(job.frame())
        except OSError:
            self.kill()
            return _ended("error", "The sandbox worker crashed while running the tool.", 0.0)
        while True:
            frame = self._next_frame(deadline, watch)
            elapsed = round((time.monotonic() - started) * 1000, 3)
            if frame is None:
                if over_memory:
                    return _ended("memory_limit", "The tool ran out of memory.", elapsed)
                if self.is_alive():  # the deadline passed with the worker still busy
                    self.kill()
                    return _ended("timeout", f"Stopped after {job.timeout_ms} ms.", elapsed)
                self.kill()
                if any("out of memory" in line.lower() for line in self.stderr_tail):
                    return _ended("memory_limit", "The tool ran out of memory.", elapsed)
                return _ended(
                    "error", "The sandbox worker crashed while running the tool.", elapsed
                )
            if frame.get("op") == "call":
                try:
                    self.send(_answer(frame, host))
                except OSError:
                    continue  # the worker died: the next read says so
                continue
            if frame.get("op") == "done":
                frame["healthy"] = frame.get("status") in {"ok", "error"} and self.is_alive()
                return frame


def _answer(frame: dict[str, Any], host: HostHandler) -> dict[str, Any]:
    try:
        value = host(str(frame.get("function", "")), frame.get("args"))
        return {"op": "result", "id": frame.get("id"), "value": value}
    except HostError as error:
        return {
            "op": "result",
            "id": frame.get("id"),
            "error": {"code": error.code, "message": error.message},
        }
    except Exception:
        logger.exception("host API call %s failed", frame.get("function"))
        return {
            "op": "result",
            "id": frame.get("id"),
            "error": {"code": "host_error", "message": "The call failed on the server."},
        }


def _ended(status: str, message: str, elapsed_ms: float) -> dict[str, Any]:
    return {
        "op": "done",
        "status": status,
        "output": None,
        "logs": [],
        "error": {"message": message, "stack": ""},
        "duration_ms": elapsed_ms,
        "cpu_ms": elapsed_ms,  # the worker died with its own count: charge the wall time
        "memory_bytes": 0,
        "healthy": False,
    }


class Pool:
    """`size` warm workers of this process; a broken or worn worker is replaced in the
    background, so the next run does not pay for its start."""

    def __init__(self, *, size: int, heap_mb: int, data_mb: int, recycle_after: int) -> None:
        self.size = size
        self.heap_mb = heap_mb
        self.data_mb = data_mb
        self.recycle_after = recycle_after
        self.idle: list[WorkerProcess] = []
        self.condition = threading.Condition()
        self.starting = 0
        self.busy = 0
        self.pid = os.getpid()
        self.closed = False
        self.requests: queue.Queue[int] = queue.Queue()
        threading.Thread(target=self._spawner, daemon=True, name="sandbox-spawner").start()
        for _ in range(size):
            self._start_one()

    def _start_one(self) -> None:
        with self.condition:
            self.starting += 1
        self.requests.put(1)

    def _spawner(self) -> None:
        """Starts every worker of the pool, one at a time. One long-lived thread: the workers
        die with the thread that started them (PR_SET_PDEATHSIG), so never a passing one."""
        while True:
            self.requests.get()
            worker = None
            try:
                worker = WorkerProcess(heap_mb=self.heap_mb, data_mb=self.data_mb)
            except Exception:
                logger.exception("could not start a sandbox worker")
            with self.condition:
                self.starting -= 1
                if worker is not None and not self.closed:
                    self.idle.append(worker)
                    self.condition.notify()
                elif worker is not None:
                    worker.kill()
            if worker is None and not self.closed:
                time.sleep(1)
                self._start_one()

    def acquire(self, timeout: float) -> WorkerProcess:
        deadline = time.monotonic() + timeout
        with self.condition:
            while not self.idle:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise WorkerUnavailable("every sandbox worker is busy")
                self.condition.wait(left)
            worker = self.idle.pop()
            self.busy += 1
        if not worker.is_alive():  # died while idle: replace it, take another
            self.release(worker, healthy=False)
            return self.acquire(max(deadline - time.monotonic(), 0.001))
        return worker

    def release(self, worker: WorkerProcess, *, healthy: bool) -> None:
        replace = not healthy or not worker.is_alive() or worker.runs >= self.recycle_after
        with self.condition:
            self.busy -= 1
            if not replace and not self.closed:
                self.idle.append(worker)
                self.condition.notify()
        if replace:
            worker.kill()
            if not self.closed:
                self._start_one()

    def close(self) -> None:
        with self.condition:
            self.closed = True
            idle, self.idle = self.idle, []
        for worker in idle:
            worker.kill()

    def stats(self) -> dict[str, int]:
        with self.condition:
            return {"idle": len(self.idle), "busy": self.busy, "starting": self.starting}


_pool: Pool | None = None
_pool_lock = threading.Lock()


def get_pool() -> Pool:
    """This process's pool, started on first use (and again in a forked child)."""
    global _pool
    from django.conf import settings

    with _pool_lock:
        if _pool is None or _pool.pid != os.getpid():
            _pool = Pool(
                size=settings.TOOLS_WORKERS,
                heap_mb=settings.TOOLS_WORKER_HEAP_MB,
                data_mb=settings.TOOLS_WORKER_DATA_MB,
                recycle_after=settings.TOOLS_WORKER_RECYCLE_AFTER,
            )
        return _pool


def shutdown_pool() -> None:
    global _pool
    with _pool_lock:
        if _pool is not None and _pool.pid == os.getpid():
            _pool.close()
        _pool = None


def execute(job: Job, host: HostHandler, *, acquire_timeout: float) -> dict[str, Any]:
    """Run `job` on a worker of this process's pool (WorkerUnavailable when none frees up)."""
    pool = get_pool()
    worker = pool.acquire(acquire_timeout)
    healthy = False
    try:
        # The worker's RSS budget: the run's heap, plus as much again for array buffers and
        # V8's own bookkeeping.
        result = worker.execute(job, host, memory_limit_bytes=2 * job.memory_bytes + (32 << 20))
        healthy = bool(result.pop("healthy", False))
        return result
    finally:
        pool.release(worker, healthy=healthy)

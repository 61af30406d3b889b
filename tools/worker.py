"""The sandbox worker: a process that runs tenant JavaScript, one run at a time, each in a fresh
V8 isolate (`python -m tools.worker`, started by tools.pool; never imported by the web process).

It imports no Django and holds no credentials: the parent passes it a scrubbed environment. It
speaks length-prefixed JSON frames on a private pipe (the parent's fd 3 and 4; stdout is sent to
stderr so a stray print cannot corrupt the protocol):

    parent -> worker  {"op": "run", "code", "input", "timeout_ms", "memory_bytes",
                       "functions": [...], "max_output", "max_logs", "max_call_bytes"}
    worker -> parent  {"op": "call", "id", "function", "args"}        (a host API call)
    parent -> worker  {"op": "result", "id", "value"} | {"op": "result", "id", "error"}
    worker -> parent  {"op": "done", "status", "output", "logs", "error", "duration_ms",
                       "memory_bytes", "cpu_ms"}

Limits enforced here (the parent has its own backstops, see tools.pool): the isolate's hard heap
limit, the wall-clock timeout (V8 TerminateExecution through mini-racer's cancelable eval), caps
on output (measured inside the isolate before anything is serialised back) and on logs.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import resource
import struct
import sys
import threading
import time
from typing import Any

HEADER = struct.Struct(">I")
MAX_FRAME = 32 * 1024 * 1024
# Every isolate in this process: the old generation may not grow past this (V8 aborts the process
# beyond it; the parent then reports `memory_limit`). Per-run limits are lower (hard limit).
PROCESS_HEAP_MB = int(os.environ.get("TOOLS_WORKER_HEAP_MB", "256"))
# All private writable memory of the process (V8's heap and array buffers alike): an allocation
# past it fails inside JavaScript (RangeError) or aborts the worker, never the machine.
PROCESS_DATA_MB = int(os.environ.get("TOOLS_WORKER_DATA_MB", "1024"))

V8_FLAGS = (
    "--single-threaded",
    f"--max-old-space-size={PROCESS_HEAP_MB}",
    # No eval() and no new Function(...): closes `this.constructor.constructor('...')()` tricks.
    "--disallow-code-generation-from-strings",
)

# Runs before the tool's code, in the same fresh context. It takes what it needs from the
# intrinsics first (the tool may replace any global afterwards: that only breaks its own run),
# removes what a tool must not have, and defines the entry point the worker calls.
PRELUDE = r"""
(() => {
  const stringify = JSON.stringify, parse = JSON.parse, StringCtor = String;
  const freeze = Object.freeze, defineProperty = Object.defineProperty;
  let MAX_LOGS = 0, MAX_OUTPUT = 0, MAX_CALL = 0, api = null;
  const logs = [];
  let logBytes = 0, truncated = false;
  const show = (value) => {
    if (typeof value === "string") return value;
    try { const s = stringify(value); return s === undefined ? StringCtor(value) : s; }
    catch (e) { return StringCtor(value); }
  };
  const log = (level) => (...items) => {
    if (truncated) return;
    let line = "";
    for (let i = 0; i < items.length; i++) {
      line += (i ? " " : "") + show(items[i]);
      if (line.length > MAX_LOGS) break;
    }
    if (logBytes + line.length > MAX_LOGS) {
      logs[logs.length] = "[logs truncated]"; truncated = true; return;
    }
    logBytes += line.length;
    logs[logs.length] = level === "log" ? line : "[" + level + "] " + line;
  };
  const console = freeze({log: log("log"), info: log("info"), warn: log("warn"),
                          error: log("error"), debug: log("debug")});
  defineProperty(globalThis, "console", {value: console, writable: false, configurable: false});
  for (const name of ["WebAssembly", "__timer_manager"]) { delete globalThis[name]; }

  const hostFunctions = globalThis.__host;
  delete globalThis.__host;
  const call = (name) => async (...args) => {
    const encoded = stringify(args === undefined ? [] : args);
    if (encoded === undefined || encoded.length > MAX_CALL)
      throw new Error("api." + name + ": arguments too large or not JSON");
    const reply = parse(await hostFunctions(name, encoded));
    if (reply.error) {
      const e = new Error(reply.error.message); e.code = reply.error.code; throw e;
    }
    return reply.value;
  };
  // Called once by the worker before the tool's code runs, then gone.
  defineProperty(globalThis, "__configure", {configurable: true, value: (encoded) => {
    const config = parse(encoded);
    MAX_LOGS = config.max_logs; MAX_OUTPUT = config.max_output; MAX_CALL = config.max_call;
    const tree = {};
    for (const name of config.functions) {
      const [group, verb] = name.split(".");
      if (verb) { tree[group] = tree[group] || {}; tree[group][verb] = call(name); }
      else { tree[group] = call(name); }
    }
    for (const group of Object.keys(tree)) {
      if (typeof tree[group] === "object") freeze(tree[group]);
    }
    api = freeze(tree);
    delete globalThis.__configure;
  }});

  const finish = (value) => {
    const out = stringify(value === undefined ? null : value);
    if (out === undefined)
      return stringify({kind: "error", message: "run() returned a value that is not JSON", logs});
    if (out.length > MAX_OUTPUT)
      return stringify({kind: "output_too_large", length: out.length, logs});
    return '{"kind":"ok","logs":' + stringify(logs) + ',"output":' + out + "}";
  };
  const fail = (error) => {
    let message, stack = "";
    try { message = StringCtor(error && error.message !== undefined ? error.message : error); }
    catch (e) { message = "error"; }
    try { stack = error && error.stack ? StringCtor(error.stack) : ""; } catch (e) { stack = ""; }
    return stringify(
      {kind: "error", message: message.slice(0, 4000), stack: stack.slice(0, 8000), logs});
  };
  defineProperty(globalThis, "__entry", {value: (input) => {
    let result;
    try {
      if (typeof run !== "function")
        return fail(new Error("the tool defines no function run(input, api)"));
      result = run(parse(input), api);
    } catch (error) { return fail(error); }
    if (result && typeof result.then === "function") return result.then(finish, fail);
    try { return finish(result); } catch (error) { return fail(error); }
  }});
})();
"""


class Channel:
    """Frames over two pipes: one reader thread dispatches replies to waiting runs."""

    def __init__(self, read_fd: int, write_fd: int) -> None:
        self.reader = os.fdopen(read_fd, "rb", buffering=0)
        self.writer = os.fdopen(write_fd, "wb", buffering=0)
        self.write_lock = threading.Lock()

    def read(self) -> dict[str, Any] | None:
        header = self._exactly(HEADER.size)
        if header is None:
            return None
        (size,) = HEADER.unpack(header)
        if size > MAX_FRAME:
            raise ValueError("frame too large")
        body = self._exactly(size)
        return None if body is None else json.loads(body)

    def _exactly(self, size: int) -> bytes | None:
        chunks, left = [], size
        while left:
            chunk = self.reader.read(left)
            if not chunk:
                return None
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)

    def write(self, frame: dict[str, Any]) -> None:
        body = json.dumps(frame, separators=(",", ":")).encode()
        with self.write_lock:
            self.writer.write(HEADER.pack(len(body)) + body)


class Worker:
    def __init__(self, channel: Channel) -> None:
        self.channel = channel
        self.loop = asyncio.new_event_loop()
        self.jobs: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self.pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.ids = itertools.count(1)
        self.prepared: tuple[contextlib.AsyncExitStack, Any] | None = None
        self.job: dict[str, Any] | None = None
        self.disposing: contextlib.AsyncExitStack | None = None
        self.calls = 0

    def serve(self) -> None:
        threading.Thread(target=self._read, daemon=True).start()
        self.loop.run_until_complete(self._serve())

    def _read(self) -> None:
        """The one reader of the parent's pipe: jobs to the queue, replies to their callers."""
        while True:
            frame = self.channel.read()
            if frame is None:
                self.loop.call_soon_threadsafe(self.jobs.put_nowait, None)
                return
            if frame.get("op") == "run":
                self.loop.call_soon_threadsafe(self.jobs.put_nowait, frame)
            elif frame.get("op") == "result":
                self.loop.call_soon_threadsafe(self._resolve, frame)

    def _resolve(self, frame: dict[str, Any]) -> None:
        future = self.pending.pop(frame.get("id"), None)
        if future is not None and not future.done():  # a late reply to a finished run: dropped
            future.set_result(frame)

    async def _serve(self) -> None:
        self.prepared = await self._prepare()
        self.channel.write({"op": "ready", "pid": os.getpid()})
        while True:
            if self.prepared is None:
                self.prepared = await self._prepare()
            job = await self.jobs.get()
            if job is None:
                return
            self.channel.write(await self.run(job))
            disposing, self.disposing = self.disposing, None
            if disposing is not None:
                await disposing.aclose()

    async def _prepare(self) -> tuple[contextlib.AsyncExitStack, Any]:
        """A fresh isolate with the prelude evaluated, for the next run only. Built while the
        worker waits for work, so a run does not wait for V8 to create an isolate."""
        from py_mini_racer import mini_racer

        stack = contextlib.AsyncExitStack()
        try:
            racer = stack.enter_context(mini_racer(self.loop))
            host = await stack.enter_async_context(racer.wrap_py_function(self._host))
            racer.eval("this")["__host"] = host
            racer.eval(PRELUDE)
        except BaseException:
            await stack.aclose()
            raise
        return stack, racer

    async def run(self, job: dict[str, Any]) -> dict[str, Any]:
        from py_mini_racer import JSOOMException, JSParseException

        started, cpu_started = time.monotonic(), time.process_time()
        outcome: dict[str, Any] = {"status": "error", "output": None, "logs": [], "error": None}
        memory_bytes = 0
        prepared, self.prepared = self.prepared, None
        stack, racer = prepared or await self._prepare()
        self.job, self.calls = job, 0
        try:
            racer.set_hard_memory_limit(int(job["memory_bytes"]))
            try:
                outcome = await asyncio.wait_for(
                    self._execute(racer, job), timeout=job["timeout_ms"] / 1000
                )
            except TimeoutError:
                outcome = _outcome("timeout", f"Stopped after {job['timeout_ms']} ms.")
            except JSOOMException:
                outcome = _outcome("memory_limit", "The tool ran out of memory.")
            except JSParseException as error:
                outcome = _outcome("error", _first_lines(str(error)))
            except Exception as error:  # a JS exception escaping the prelude, or a terminated run
                if racer.was_hard_memory_limit_reached():
                    outcome = _outcome("memory_limit", "The tool ran out of memory.")
                else:
                    outcome = _outcome("error", _first_lines(str(error)))
            if outcome["status"] != "timeout" and racer.was_hard_memory_limit_reached():
                outcome = _outcome("memory_limit", "The tool ran out of memory.", outcome["logs"])
            if outcome["status"] != "timeout":
                with contextlib.suppress(Exception):  # statistics are best effort after a failure
                    memory_bytes = int(racer.heap_stats().get("used_heap_size", 0))
        finally:
            self.job = None
            # Disposed of after the answer is sent (`_serve`). After a timeout or out of memory
            # the isolate may still be busy: the parent replaces this worker instead.
            if outcome["status"] in {"ok", "error"}:
                self.disposing = stack
        return {
            "op": "done",
            **outcome,
            "duration_ms": round((time.monotonic() - started) * 1000, 3),
            "cpu_ms": round((time.process_time() - cpu_started) * 1000, 3),
            "memory_bytes": memory_bytes,
        }

    async def _execute(self, racer: Any, job: dict[str, Any]) -> dict[str, Any]:
        from py_mini_racer import JSPromise

        config = {
            "max_logs": int(job["max_logs"]),
            "max_output": int(job["max_output"]),
            "max_call": int(job["max_call_bytes"]),
            "functions": list(job["functions"]),
        }
        # JSON text as a JavaScript string literal (valid JS since ES2019, U+2028 included).
        await racer.eval_cancelable(f"__configure({_literal(config)})")
        await racer.eval_cancelable(job["code"])
        if job.get("check_only"):
            return {"status": "ok", "output": None, "logs": [], "error": None}
        result = await racer.eval_cancelable(f"__entry({_literal(job['input'])})")
        if isinstance(result, JSPromise):
            result = await result
        return _decode(result, job)

    async def _host(self, name: Any, encoded: Any) -> str:
        """A host API call of the current run: relayed to the parent, which decides."""
        job = self.job
        if job is None:  # a call after its run ended (a leftover promise): refused
            return json.dumps({"error": {"code": "run_ended", "message": "The run has ended."}})
        self.calls += 1
        if self.calls > int(job.get("max_calls", 100)):
            error = {"code": "too_many_calls", "message": "Too many host API calls."}
            return json.dumps({"error": error})
        call_id = next(self.ids)
        future = self.loop.create_future()
        self.pending[call_id] = future
        self.channel.write(
            {"op": "call", "id": call_id, "function": str(name), "args": json.loads(encoded)}
        )
        try:
            reply = await future
        finally:
            self.pending.pop(call_id, None)
        if "error" in reply:
            return json.dumps({"error": reply["error"]})
        return json.dumps({"value": reply.get("value")})


def _literal(value: Any) -> str:
    return json.dumps(json.dumps(value, separators=(",", ":")))


def _decode(result: Any, job: dict[str, Any]) -> dict[str, Any]:
    if (
        not isinstance(result, str)
        or len(result.encode()) > int(job["max_output"]) * 4 + int(job["max_logs"]) * 4 + 65536
    ):
        return _outcome("error", "The tool's result could not be read.")
    data = json.loads(result)
    logs = [line for line in data.get("logs", []) if isinstance(line, str)]
    kind = data.get("kind")
    if kind == "ok":
        return {"status": "ok", "output": data.get("output"), "logs": logs, "error": None}
    if kind == "output_too_large":
        message = f"The output is larger than {job['max_output']} characters."
        return _outcome("error", message, logs, code="output_too_large")
    return {
        "status": "error",
        "output": None,
        "logs": logs,
        "error": {"message": str(data.get("message", "")), "stack": str(data.get("stack", ""))},
    }


def _outcome(
    status: str, message: str, logs: list[str] | None = None, *, code: str = ""
) -> dict[str, Any]:
    error = {"message": message, "stack": ""}
    if code:
        error["code"] = code
    return {"status": status, "output": None, "logs": logs or [], "error": error}


def _first_lines(text: str) -> str:
    return "\n".join(text.strip().splitlines()[:6])[:2000]


def _die_with_parent() -> None:
    """Linux: the kernel kills this worker when the process that started it dies."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, 9)  # PR_SET_PDEATHSIG, SIGKILL
    except (OSError, AttributeError):  # pragma: no cover (not Linux)
        pass


def main() -> None:
    _die_with_parent()
    data = PROCESS_DATA_MB * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_DATA, (data, data))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    from py_mini_racer import init_mini_racer

    init_mini_racer(flags=V8_FLAGS)
    # The pipe's reader thread hands frames to the event loop: switch threads promptly.
    sys.setswitchinterval(0.0005)
    read_fd, write_fd = int(sys.argv[1]), int(sys.argv[2])
    os.dup2(2, 1)  # stdout is not the protocol: anything printed goes to the log
    Worker(Channel(read_fd, write_fd)).serve()


if __name__ == "__main__":
    main()

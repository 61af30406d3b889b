"""The sandbox itself (tools.pool + tools.worker): limits, escapes, isolation between runs.

Every attack ends with the right status, and the next run on the pool works."""

from __future__ import annotations

import os

import pytest

from tests.tools.conftest import job, refuse
from tools import pool


def run(code: str, input=None, host=refuse, **limits) -> dict:
    return pool.execute(job(code, input, **limits), host, acquire_timeout=30)


def assert_pool_healthy() -> None:
    after = run("function run(input) { return input.n * 2 }", {"n": 21})
    assert after["status"] == "ok"
    assert after["output"] == 42


def test_a_run_returns_its_output_logs_and_figures():
    result = run(
        "function run(input) { console.log('got', input); console.warn(1, [2]); "
        "return {sum: input.a + input.b} }",
        {"a": 2, "b": 3},
    )
    assert result["status"] == "ok"
    assert result["output"] == {"sum": 5}
    assert result["logs"] == ['got {"a":2,"b":3}', "[warn] 1 [2]"]
    assert result["error"] is None
    assert result["duration_ms"] > 0
    assert result["memory_bytes"] > 0


def test_async_run_and_timers_inside_the_run():
    result = run(
        "async function run(input) { await new Promise(r => setTimeout(r, 20)); return input.x }",
        {"x": "later"},
    )
    assert (result["status"], result["output"]) == ("ok", "later")


def test_a_thrown_error_carries_its_message_and_stack():
    result = run("function run() { throw new TypeError('bad input') }")
    assert result["status"] == "error"
    assert result["error"]["message"] == "bad input"
    assert "TypeError: bad input" in result["error"]["stack"]
    assert "at run" in result["error"]["stack"]


def test_code_without_run_and_syntax_errors_are_errors():
    assert run("const x = 1;")["error"]["message"] == "the tool defines no function run(input, api)"
    broken = run("function run( {")
    assert broken["status"] == "error"
    assert "SyntaxError" in broken["error"]["message"]


@pytest.mark.parametrize(
    "code",
    [
        "function run() { while (true) {} }",
        "async function run() { while (true) { await null } }",
        "function run() { return /^(a+)+$/.test('a'.repeat(40) + 'b') }",
        "function run() { return new Promise(() => {}) }",
    ],
    ids=["infinite-loop", "microtask-loop", "catastrophic-regex", "never-settles"],
)
def test_runs_that_never_end_time_out(code):
    result = run(code, timeout_ms=500)
    assert result["status"] == "timeout"
    assert result["error"]["message"] == "Stopped after 500 ms."
    assert result["duration_ms"] < 500 + pool.KILL_GRACE_MS + 1000
    assert_pool_healthy()


@pytest.mark.parametrize(
    "code",
    [
        "function run() { const a = []; while (true) a.push({n: a.length}) }",
        "function run() { return (function f() { return Promise.resolve().then(f) })() }",
        "function run() { return new Array(1e9).fill(1).length }",
        "function run() { const a = []; for (let i = 0; i < 100; i++) {"
        " const b = new Uint8Array(50 * 1024 * 1024); b.fill(1); a.push(b) } return a.length }",
        "function run() { const m = new Map(); for (let i = 0; ; i++) m.set(i, 'v' + i) }",
    ],
    ids=["array", "recursive-promises", "huge-array-fill", "array-buffers", "map"],
)
def test_memory_bombs_stop_at_the_limit(code):
    result = run(code, timeout_ms=5000)
    assert result["status"] == "memory_limit"
    assert result["error"]["message"] == "The tool ran out of memory."
    assert_pool_healthy()


@pytest.mark.parametrize(
    "code",
    [
        "function run() { return {a: 'x'.repeat(1e7)} }",
        "function run() { return new Array(3e6).fill('abcdefghij') }",
    ],
    ids=["long-string", "long-array"],
)
def test_huge_outputs_are_refused_before_they_leave_the_isolate(code):
    result = run(code, max_output=1000)
    assert result["status"] == "error"
    assert result["error"]["code"] == "output_too_large"
    assert result["output"] is None
    assert_pool_healthy()


def test_logs_are_capped():
    result = run(
        "function run() { for (let i = 0; i < 1e5; i++) console.log('0123456789'); return 1 }",
        max_logs=100,
    )
    assert result["status"] == "ok"
    assert result["logs"] == ["0123456789"] * 10 + ["[logs truncated]"]


def test_one_huge_log_line_is_capped():
    result = run("function run() { console.log('x'.repeat(1e6)); return 1 }", max_logs=100)
    assert result["logs"] == ["[logs truncated]"]


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("typeof require", "undefined"),
        ("typeof process", "undefined"),
        ("typeof fetch", "undefined"),
        ("typeof XMLHttpRequest", "undefined"),
        ("typeof WebAssembly", "undefined"),
        ("typeof Deno + typeof Bun + typeof module", "undefinedundefinedundefined"),
    ],
)
def test_no_ambient_authority(expression, expected):
    result = run(f"function run() {{ return {expression} }}")
    assert result["output"] == expected


def test_escape_through_the_function_constructor_fails():
    result = run("function run() { return this.constructor.constructor('return process')() }")
    assert result["status"] == "error"
    assert "Code generation from strings disallowed" in result["error"]["message"]
    assert run("function run() { return eval('1 + 1') }")["status"] == "error"


def test_dynamic_import_fails():
    result = run("async function run() { const fs = await import('fs'); return typeof fs }")
    assert result["status"] == "error"
    assert result["error"]["message"] == "Not supported"


def test_the_global_object_holds_only_the_language_and_console():
    result = run(
        "function run() { return Object.getOwnPropertyNames(globalThis)"
        ".filter(n => !/^[A-Z]/.test(n) || n === 'WebAssembly').sort() }"
    )
    assert set(result["output"]) == {
        "__entry",
        "__timer_manager",  # mini-racer's setTimeout, bound to this run's fresh context
        "clearTimeout",
        "console",
        "decodeURI",
        "decodeURIComponent",
        "encodeURI",
        "encodeURIComponent",
        "escape",
        "eval",  # present, but refused (no code generation from strings)
        "globalThis",
        "isFinite",
        "isNaN",
        "parseFloat",
        "parseInt",
        "run",
        "setTimeout",
        "undefined",
        "unescape",
    }


def test_no_state_survives_from_one_run_to_the_next():
    code = (
        "function run() { const seen = [typeof globalThis.leaked,"
        " typeof Object.prototype.polluted];"
        " globalThis.leaked = 1; Object.prototype.polluted = 1; Array.prototype.push = null;"
        " return seen }"
    )
    for _ in range(2 * pool.get_pool().size):  # every worker of the pool, at least once
        assert run(code)["output"] == ["undefined", "undefined"]


def test_each_run_gets_a_fresh_isolate_in_a_worker_process():
    """Two runs never share a V8 context: the isolate's identity hash seeds differ, and the
    run happens in another process than this one."""
    first = run("function run() { return globalThis.marker = Math.random() }")
    second = run("function run() { return typeof globalThis.marker }")
    assert first["status"] == "ok"
    assert second["output"] == "undefined"
    pids = {worker.pid for worker in pool.get_pool().idle}
    assert os.getpid() not in pids


def test_host_functions_are_frozen_and_only_the_granted_ones_exist():
    calls = []

    def host(function, args):
        calls.append((function, args))
        return {"value": args[0]}

    result = run(
        "async function run(input, api) {"
        " const frozen = Object.isFrozen(api) && Object.isFrozen(api.kv);"
        " try { api.kv.read = () => 'forged' } catch (e) {}"
        " Object.prototype.write = () => 'polluted';"
        " return [frozen, typeof api.kv.write, typeof api.publish, await api.kv.read('k')] }",
        host=host,
        functions=["kv.read"],
    )
    assert result["output"] == [True, "function", "undefined", {"value": "k"}]
    # `api.kv.write` is the polluted prototype's function: it never reaches the host.
    assert calls == [("kv.read", ["k"])]


def test_a_refused_host_call_is_an_error_in_the_tool():
    result = run(
        "async function run(input, api) { try { await api.kv.read('k') } "
        "catch (e) { return [e.code, e.message] } }",
        functions=["kv.read"],
    )
    assert result["output"] == ["permission_denied", "nothing here"]


def test_host_calls_are_capped_per_run_and_in_size():
    def host(function, args):
        return 1

    result = run(
        "async function run(input, api) { let n = 0; try { while (true) { await api.kv.read('k');"
        " n++ } } catch (e) { return [n, e.code] } }",
        host=host,
        functions=["kv.read"],
        max_calls=5,
    )
    assert result["output"] == [5, "too_many_calls"]
    big = run(
        "async function run(input, api) { try { await api.kv.read('x'.repeat(5000)) }"
        " catch (e) { return e.message } }",
        host=host,
        functions=["kv.read"],
        max_call_bytes=1000,
    )
    assert big["output"] == "api.kv.read: arguments too large or not JSON"


def test_a_crashed_worker_is_replaced():
    victim = pool.get_pool().acquire(30)
    pool.get_pool().release(victim, healthy=True)
    os.kill(victim.pid, 9)
    victim.process.wait(timeout=5)
    for _ in range(2 * pool.get_pool().size):
        assert_pool_healthy()

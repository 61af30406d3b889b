"""Custom tools: a warm run of a trivial tool in the sandbox, beside plain mini-racer in-process.

    .venv/bin/python bench/tools_sandbox.py [--rounds 30] [--runs 50]

Variants, alternated round by round (each round takes `--runs` samples of each, in rotating
order), all in this one process and run:
- `eval`: the floor. One warm in-process MiniRacer context, `run(input)` evaluated in it (no
  isolation between calls at all).
- `fresh_context`: a new in-process mini-racer context (a new V8 isolate) per call, the tool's code
  evaluated in it, then `run(input)`: what isolation per run costs by itself.
- `sandbox`: one worker process (tools.pool.WorkerProcess.execute, what every run goes through):
  the job over the pipe, a fresh isolate with the prelude (console capture, caps, host API
  object), the tool's code and `run(input)`, the result back. Runs back to back, so the worker
  also builds the next run's isolate inside each timed run: runs per second per worker.
- `sandbox_idle`: the same after 20 ms of idleness (not timed), in which the worker has built
  the next run's isolate: the latency a run sees when the pool is not saturated.
Cold start: the time from starting a worker process to its `ready` frame (median of `--cold`).
No database is involved: the service layer (tool lookup, input schema, audit row) is not timed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from py_mini_racer import MiniRacer  # noqa: E402

from tools import pool  # noqa: E402

paused_ms = 0.0
CODE = "function run(input) { return {sum: input.a + input.b} }"
INPUT = {"a": 2, "b": 3}


def job() -> pool.Job:
    return pool.Job(
        code=CODE,
        input=INPUT,
        timeout_ms=5000,
        memory_bytes=32 << 20,
        functions=[],
        max_output=256 * 1024,
        max_logs=16 * 1024,
        max_call_bytes=64 * 1024,
        max_calls=100,
    )


def refuse(function, args):
    raise pool.HostError("permission_denied", "none")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--cold", type=int, default=10)
    args = parser.parse_args()

    warm = MiniRacer()
    warm.eval(CODE)
    payload = json.dumps(INPUT)
    worker = pool.WorkerProcess(heap_mb=256, data_mb=1024)

    def run_eval() -> None:
        assert warm.execute(f"run({payload})") == {"sum": 5}

    def run_fresh() -> None:
        with MiniRacer() as fresh:
            fresh.eval(CODE)
            assert fresh.execute(f"run({payload})") == {"sum": 5}

    def run_sandbox() -> None:
        result = worker.execute(job(), refuse, memory_limit_bytes=1 << 30)
        assert result["status"] == "ok" and result["output"] == {"sum": 5}, result

    def run_sandbox_after_idle() -> None:
        # Not timed: the worker builds the next run's isolate while it waits for work.
        global paused_ms
        pause = time.perf_counter()
        time.sleep(0.02)
        paused_ms += (time.perf_counter() - pause) * 1000
        run_sandbox()

    variants = {
        "eval": run_eval,
        "fresh_context": run_fresh,
        "sandbox": run_sandbox,
        "sandbox_idle": run_sandbox_after_idle,
    }
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for function in variants.values():  # warm-up, not recorded
        for _ in range(5):
            function()
    names = list(variants)
    for round_number in range(args.rounds):
        order = names[round_number % len(names) :] + names[: round_number % len(names)]
        for name in order:
            for _ in range(args.runs):
                global paused_ms
                paused_ms = 0.0
                started = time.perf_counter()
                variants[name]()
                samples[name].append((time.perf_counter() - started) * 1000 - paused_ms)

    cold = []
    for _ in range(args.cold):
        started = time.perf_counter()
        fresh_worker = pool.WorkerProcess(heap_mb=256, data_mb=1024)
        cold.append((time.perf_counter() - started) * 1000)
        fresh_worker.kill()
    worker.kill()

    floor = statistics.median(samples["eval"])
    print(f"{'variant':<15}{'p50 ms':>10}{'p90 ms':>10}{'p99 ms':>10}{'x floor':>10}{'runs/s':>10}")
    results = {}
    for name, values in samples.items():
        values.sort()
        p50 = statistics.median(values)
        p90 = values[int(len(values) * 0.9)]
        p99 = values[int(len(values) * 0.99)]
        per_second = 1000 / statistics.mean(values)
        results[name] = {"p50_ms": p50, "p90_ms": p90, "p99_ms": p99, "runs_per_s": per_second}
        print(
            f"{name:<15}{p50:>10.3f}{p90:>10.3f}{p99:>10.3f}{p50 / floor:>10.1f}{per_second:>10.0f}"
        )
    cold_p50 = statistics.median(cold)
    print(f"cold start of a worker (to ready): median {cold_p50:.0f} ms of {args.cold}")
    results["cold_start_ms"] = {"median": cold_p50, "samples": cold}
    out = ROOT / "bench" / "results" / "tools_sandbox.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"rounds": args.rounds, "runs": args.runs, **results}, indent=2))


if __name__ == "__main__":
    main()

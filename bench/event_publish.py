"""Publishing one event from synchronous code (a service's on-commit), through the Redis layer.

Baseline: `async_to_sync(events.send)`, a fresh event loop (so fresh channels-redis connections)
per publish. Product: `events.send_from_sync`, handed to one publishing thread per process.
Rounds alternate the two; figures are medians in milliseconds.

    BENCH_REDIS_URL=redis://127.0.0.1:6379/9 .venv/bin/python bench/event_publish.py
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

ROUNDS = 10
PER_ROUND = 50


def main() -> None:
    if not _common.REDIS_URL:
        sys.exit("set BENCH_REDIS_URL (or REDIS_URL): this measures the Redis channel layer")
    os.environ.update(_common.django_env(_common.database_url("events")))
    sys.path.insert(0, str(_common.ROOT))
    import django

    django.setup()
    from asgiref.sync import async_to_sync

    from tenants import events

    tenant_id = "00000000-0000-0000-0000-000000000000"
    variants = {
        "async_to_sync per publish (baseline)": lambda m: async_to_sync(events.send)(
            tenant_id, "agents.bench.event", m
        ),
        "send_from_sync (publishing thread)": lambda m: events.send_from_sync(
            tenant_id, "agents.bench.event", m
        ),
    }
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for round_number in range(ROUNDS + 1):
        for name, publish in variants.items():
            for _ in range(PER_ROUND):
                message = events.event_message(tenant_id, "agents.bench.event", {"n": 1})
                started = time.perf_counter()
                publish(message)
                if round_number:  # round 0 warms up
                    samples[name].append((time.perf_counter() - started) * 1000)
    results = {
        name: {
            "median_ms": round(_common.median(values), 3),
            "p95_ms": round(_common.percentile(values, 0.95), 3),
        }
        for name, values in samples.items()
    }
    baseline, product = (results[name]["median_ms"] for name in variants)
    report = {
        "machine": _common.machine_facts(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "results": results,
        "speedup": round(baseline / product, 1),
    }
    print(json.dumps(report, indent=2))
    (_common.ROOT / "bench" / "results" / "event_publish.json").write_text(
        json.dumps(report, indent=2) + "\n"
    )


if __name__ == "__main__":
    main()

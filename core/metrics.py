"""The process's Prometheus metrics, defined once (docs/operations.md lists them).

Served at `/metrics` (portal.operations) in Prometheus' text format, to staff or an internal
address only. Each server process has its own registry unless `PROMETHEUS_MULTIPROC_DIR` is set
(prometheus-client's multiprocess mode, for several workers behind one scrape target).
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

HTTP_REQUESTS = Counter(
    "agentplane_http_requests_total",
    "HTTP requests answered, by route pattern, method and status.",
    ["route", "method", "status"],
)
HTTP_LATENCY = Histogram(
    "agentplane_http_request_duration_seconds",
    "Time to answer an HTTP request, by route pattern and method.",
    ["route", "method"],
    buckets=LATENCY_BUCKETS,
)
HTTP_ERRORS = Counter(
    "agentplane_http_server_errors_total",
    "HTTP answers with a 5xx status, by route pattern and status.",
    ["route", "status"],
)
WEBSOCKET_CONNECTIONS = Gauge(
    "agentplane_websocket_connections",
    "Open WebSocket connections in this process.",
    multiprocess_mode="livesum",
)
WEBSOCKET_FRAMES = Counter(
    "agentplane_websocket_frames_total",
    "WebSocket frames, by direction (in, out) and op (or `error`, `event`).",
    ["direction", "op"],
)
RATE_LIMIT_REFUSALS = Counter(
    "agentplane_rate_limit_refusals_total",
    "Requests and frames refused by a rate limit (429), by limit scope.",
    ["scope"],
)
CHANNEL_LAYER_SEND = Histogram(
    "agentplane_channel_layer_send_seconds",
    "Time to hand one event to the channel layer (every group of its subject).",
    buckets=LATENCY_BUCKETS,
)
FAILURE_RECORD = Histogram(
    "agentplane_audit_failure_record_seconds",
    "Time to count one failure from outside (audit.failures), its audit row included.",
    buckets=LATENCY_BUCKETS,
)
AUDIT_WRITE = Histogram(
    "agentplane_audit_write_seconds",
    "Time to write audit events, by step: `record` (one event inserted, and chained when the "
    "sealer is `immediate`) and `seal` (one sealing pass chaining pending events).",
    ["step"],
    buckets=LATENCY_BUCKETS,
)
JOB_LAG = Gauge(
    "agentplane_background_job_lag_seconds",
    "How late a periodic job ran compared with its schedule, by job (set when it runs).",
    ["job"],
    multiprocess_mode="max",
)

KNOWN_OPS = frozenset(
    {
        "auth",
        "subscribe",
        "unsubscribe",
        "publish",
        "attach",
        "heartbeat",
        "config",
        "detach",
        "ping",
    }
)


def frame_op(op: object) -> str:
    """A bounded label for a client-chosen op."""
    return op if isinstance(op, str) and op in KNOWN_OPS else "other"


def exposition() -> tuple[bytes, str]:
    """The metrics in Prometheus' text format, and its content type."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST

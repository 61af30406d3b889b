"""Gateway benchmark: fan-out latency, throughput, memory per connection, and HTTP over ASGI/WSGI.

One uvicorn process serves the gateway (real Redis channel layer, real PostgreSQL); the clients
run in this process (asyncio, `websockets`). Each gateway figure is measured beside its floor:
raw Redis PUBLISH to the same number of plain Redis subscribers, in the same run; the NATS
server on the machine (BENCH_NATS_URL, default nats://127.0.0.1:4222) beside it as the reference.

  fan-out   one publish to N subscribers (1, 100, 1000) of one organization, subscribed to the
            same subject; latency from the publish frame's send to each subscriber's receipt
            (p50, p99 over every delivery), messages sent one at a time
  rate      messages/s through one server process: one publisher sends as fast as the server
            answers (a window of 100 in flight; an ack or a refusal frees a place, refusals are
            counted by code, a leg with no reply for 30 s fails), one subscriber; each message
            is checked, admitted by billing's one Lua call (rate limits, monthly quota, usage
            ledger) and fanned out
  memory    the server's resident memory before and after 1000 authenticated, subscribed, idle
            connections: the increase per connection
  http      GET /api/v1/organization/ (Api-Key) with wrk on uvicorn (ASGI) and gunicorn (WSGI,
            sync), 2 worker processes each, alternating rounds: requests/s

    .venv/bin/python bench/gateway_fanout.py [--messages 200] [--rounds 3] [--duration 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    PYTHON,
    REDIS_URL,
    ROOT,
    database_url,
    django_env,
    ensure_database,
    machine_facts,
    median,
    percentile,
)

SLUG = "gateway-bench"
HOST = f"{SLUG}.localhost"
PORT = int(os.environ.get("BENCH_GATEWAY_PORT", "8360"))
ASGI_PORT, WSGI_PORT = PORT + 1, PORT + 2
RESULTS = ROOT / "bench" / "results" / "gateway.json"
UNLIMITED = {
    "GATEWAY_PUBLISH_RATE_PER_CONNECTION": "1000000/s",
    "GATEWAY_PUBLISH_RATE_PER_ORGANIZATION": "1000000/s",
    "GATEWAY_QUEUE_SIZE": "100000",
}

PREPARE = f"""
import json
import django
django.setup()
from accounts.models import User

from core.actors import Actor
from credentials import services as credentials
from tenants import context
from organizations import services
from tenants.models import Tenant
actor = Actor.system("bench")
with context.public_context():
    tenant = Tenant.objects.filter(slug={SLUG!r}).first()
    if tenant is None:
        tenant = services.provision_tenant(actor=actor, slug={SLUG!r}, name="Gateway bench",
            owner_email="owner@{SLUG}.test", owner_password="bench-password-correct-horse")
    Tenant.objects.filter(pk=tenant.pk).update(messages_per_month_override=10**12)
with context.tenant_context(tenant):
    owner = User.objects.get(email="owner@{SLUG}.test")
    _, raw = credentials.api_key_create(actor=Actor.for_user(owner), name="bench",
        scopes=["agents:read", "tasks:publish", "org:read"])
print(json.dumps({{"key": raw}}))
"""


def wait_for_port(port: int, process: subprocess.Popen, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"server on {port} did not start") from None
            time.sleep(0.1)


def start(command: list[str], port: int, env: dict[str, str]) -> subprocess.Popen:
    process = subprocess.Popen(command, cwd=ROOT, env=env, start_new_session=True)  # noqa: S603
    wait_for_port(port, process)
    return process


def stop(process: subprocess.Popen) -> None:
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def rss_kb(pid: int) -> tuple[int, int]:
    fields = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            name, _, value = line.partition(":")
            fields[name] = value.strip()
    return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])


# --- Gateway clients ---------------------------------------------------------------------------


async def open_client(key: str, subject: str | None):
    import websockets

    socket_ = await websockets.connect(
        f"ws://{HOST}:{PORT}/ws/events/", host="127.0.0.1", port=PORT, max_size=2**20
    )
    await socket_.send(json.dumps({"op": "auth", "token": key}))
    assert json.loads(await socket_.recv())["op"] == "ready"
    if subject:
        await socket_.send(json.dumps({"op": "subscribe", "subject": subject, "ref": "s"}))
        assert json.loads(await socket_.recv())["op"] == "subscribed"
    return socket_


async def open_many(key: str, count: int, subject: str) -> list:
    clients = []
    for start_at in range(0, count, 50):  # in batches: auth writes (key last-used) are serial
        batch = await asyncio.gather(
            *(open_client(key, subject) for _ in range(min(50, count - start_at)))
        )
        clients.extend(batch)
    return clients


async def gateway_fanout(key: str, subscribers: int, messages: int) -> list[float]:
    clients = await open_many(key, subscribers, "bench.fanout")
    publisher = await open_client(key, None)
    latencies: list[float] = []
    try:
        for n in range(messages):
            sent = time.perf_counter()
            await publisher.send(
                json.dumps({"op": "publish", "subject": "bench.fanout", "data": {"n": n}})
            )

            async def receive(client, n=n, sent=sent):
                while True:  # a lost delivery fails the run instead of hanging it
                    frame = json.loads(await asyncio.wait_for(client.recv(), 60))
                    if frame.get("data", {}).get("n") == n:
                        return time.perf_counter() - sent

            latencies.extend(await asyncio.gather(*(receive(c) for c in clients)))
    finally:
        for client in [*clients, publisher]:
            await client.close()
    return latencies


async def redis_fanout(subscribers: int, messages: int) -> list[float]:
    import redis.asyncio as redis

    channel = "bench.raw.fanout"
    subs = []
    for _ in range(subscribers):
        client = redis.Redis.from_url(REDIS_URL)
        pubsub = client.pubsub()
        await pubsub.subscribe(channel)
        await pubsub.get_message(timeout=1)  # the subscribe confirmation
        subs.append((client, pubsub))
    publisher = redis.Redis.from_url(REDIS_URL)
    latencies: list[float] = []
    try:
        for n in range(messages):
            sent = time.perf_counter()
            await publisher.publish(channel, json.dumps({"n": n}))

            async def receive(pubsub, n=n, sent=sent):
                while True:
                    message = await pubsub.get_message(timeout=5)
                    is_data = message is not None and message["type"] == "message"
                    if is_data and json.loads(message["data"])["n"] == n:
                        return time.perf_counter() - sent

            latencies.extend(await asyncio.gather(*(receive(p) for _, p in subs)))
    finally:
        for client, pubsub in subs:
            await pubsub.aclose()
            await client.aclose()
        await publisher.aclose()
    return latencies


NATS_URL = os.environ.get("BENCH_NATS_URL", "nats://127.0.0.1:4222")


async def nats_fanout(subscribers: int, messages: int) -> list[float]:
    """The reference: the NATS server on this machine, one connection per subscriber."""
    import nats

    subject = "bench.raw.fanout"
    subs = []
    for _ in range(subscribers):
        client = await nats.connect(NATS_URL)
        subs.append((client, await client.subscribe(subject)))
    publisher = await nats.connect(NATS_URL)
    for client, _sub in subs:
        await client.flush()
    latencies: list[float] = []
    try:
        for n in range(messages):
            sent = time.perf_counter()
            await publisher.publish(subject, json.dumps({"n": n}).encode())
            await publisher.flush()

            async def receive(sub, n=n, sent=sent):
                while True:
                    message = await sub.next_msg(timeout=5)
                    if json.loads(message.data)["n"] == n:
                        return time.perf_counter() - sent

            latencies.extend(await asyncio.gather(*(receive(sub) for _, sub in subs)))
    finally:
        for client, _sub in subs:
            await client.close()
        await publisher.close()
    return latencies


async def nats_rate(messages: int) -> float:
    import nats

    subscriber, publisher = await nats.connect(NATS_URL), await nats.connect(NATS_URL)
    done = asyncio.Event()
    got = 0

    async def deliver(_message) -> None:
        nonlocal got
        got += 1
        if got == messages:
            done.set()

    await subscriber.subscribe("bench.raw.rate", cb=deliver)
    await subscriber.flush()
    started = time.perf_counter()
    for n in range(messages):
        await publisher.publish("bench.raw.rate", json.dumps({"n": n}).encode())
    await publisher.flush()
    await asyncio.wait_for(done.wait(), timeout=60)
    elapsed = time.perf_counter() - started
    await subscriber.close()
    await publisher.close()
    return messages / elapsed


REPLY_TIMEOUT = 30.0  # seconds without a reply or a delivery before a throughput leg fails


async def gateway_rate(key: str, messages: int, window: int = 100) -> dict:
    """One publisher (`window` publishes in flight, each freed by its ack or its refusal), one
    subscriber: accepted messages/s until the last is delivered, and the refusals by code."""
    subscriber = await open_client(key, "bench.rate")
    publisher = await open_client(key, None)
    in_flight = asyncio.Semaphore(window)
    acked = 0
    refused: dict[str, int] = {}
    delivered = 0

    async def replies() -> None:
        nonlocal acked
        while acked + sum(refused.values()) < messages:
            frame = json.loads(await asyncio.wait_for(publisher.recv(), REPLY_TIMEOUT))
            if frame.get("op") == "ack":
                acked += 1
            elif "error" in frame:
                code = frame["error"].get("code", "?")
                refused[code] = refused.get(code, 0) + 1
            else:
                continue
            in_flight.release()

    async def deliveries() -> None:
        nonlocal delivered
        while True:
            await subscriber.recv()
            delivered += 1

    receiver = asyncio.ensure_future(deliveries())
    replier = asyncio.ensure_future(replies())
    started = time.perf_counter()
    try:
        for n in range(messages):
            await asyncio.wait_for(in_flight.acquire(), REPLY_TIMEOUT)
            await publisher.send(
                json.dumps({"op": "publish", "subject": "bench.rate", "data": {"n": n}, "ref": n})
            )
        await replier
        deadline = time.monotonic() + REPLY_TIMEOUT
        while delivered < acked:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{acked - delivered} accepted messages never delivered")
            await asyncio.sleep(0.002)
        elapsed = time.perf_counter() - started
    finally:
        receiver.cancel()
        replier.cancel()
        await subscriber.close()
        await publisher.close()
    return {"rate": acked / elapsed, "accepted": acked, "refused": refused}


async def redis_rate(messages: int) -> float:
    import redis.asyncio as redis

    client, publisher = redis.Redis.from_url(REDIS_URL), redis.Redis.from_url(REDIS_URL)
    pubsub = client.pubsub()
    await pubsub.subscribe("bench.raw.rate")
    await pubsub.get_message(timeout=1)
    started = time.perf_counter()

    async def deliveries():
        got = 0
        while got < messages:
            message = await pubsub.get_message(timeout=5)
            if message and message["type"] == "message":
                got += 1

    receiver = asyncio.ensure_future(deliveries())
    for n in range(messages):
        await publisher.publish("bench.raw.rate", json.dumps({"n": n}))
    await receiver
    elapsed = time.perf_counter() - started
    await pubsub.aclose()
    await client.aclose()
    await publisher.aclose()
    return messages / elapsed


async def idle_memory(key: str, pid: int, count: int) -> dict[str, float]:
    await asyncio.sleep(1)
    before, _ = rss_kb(pid)
    clients = await open_many(key, count, "bench.idle")
    await asyncio.sleep(2)
    after, peak = rss_kb(pid)
    for client in clients:
        await client.close()
    return {
        "connections": count,
        "rss_before_kb": before,
        "rss_after_kb": after,
        "peak_kb": peak,
        "per_connection_kb": (after - before) / count,
    }


def wrk_rate(port: int, key: str, duration: float) -> float:
    output = subprocess.run(
        ["wrk", "-t1", "-c8", f"-d{duration:g}s", "-H", f"Host: {HOST}"]  # noqa: S607
        + ["-H", f"Authorization: Api-Key {key}", f"http://127.0.0.1:{port}/api/v1/organization/"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    if "Non-2xx" in output or "Socket errors" in output:
        raise RuntimeError(f"wrk saw errors:\n{output}")
    return float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))


def summary(latencies: list[float]) -> dict[str, float]:
    return {
        "p50_ms": percentile(latencies, 0.5) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
        "deliveries": len(latencies),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--rate-messages", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5)
    parser.add_argument("--subscribers", default="1,100,1000")
    parser.add_argument("--skip-http", action="store_true", help="only the gateway figures")
    # Closing 1,000 sockets keeps a loaded server busy for minutes: the fan-out measured right
    # after it then loses deliveries (60 s timeout) that a fresh server does not.
    parser.add_argument("--skip-memory", action="store_true")
    options = parser.parse_args()
    if not REDIS_URL:
        sys.exit("the gateway bench needs Redis: set BENCH_REDIS_URL")
    database = database_url("gateway")
    ensure_database(database)
    env = django_env(database, **UNLIMITED)
    prepared = subprocess.run(
        [PYTHON, "-c", PREPARE], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    key = json.loads(prepared.stdout.strip().splitlines()[-1])["key"]
    results: dict = {"machine": machine_facts(database), "options": vars(options)}

    uvicorn = [PYTHON, "-m", "uvicorn", "portal.asgi:application", "--log-level", "warning"]
    server = start(
        [*uvicorn, "--port", str(PORT), "--ws", "websockets-sansio", "--ws-max-size", "131072"],
        PORT,
        env,  # WebSocket only: consumers query from one thread; persistent connections are fine
    )
    try:
        if not options.skip_memory:
            # First, on the fresh process: memory it has already grown would hide the increase.
            results["memory"] = asyncio.run(idle_memory(key, server.pid, 1000))
            print("memory", results["memory"], flush=True)
        results["fanout"] = {}
        for count in [int(n) for n in options.subscribers.split(",")]:
            try:
                gateway = summary(asyncio.run(gateway_fanout(key, count, options.messages)))
            except TimeoutError:  # recorded, and the run goes on with the floors
                gateway = {"error": "a delivery did not arrive within 60 s"}
            raw = asyncio.run(redis_fanout(count, options.messages))
            reference = asyncio.run(nats_fanout(count, options.messages))
            results["fanout"][count] = {
                "gateway": gateway,
                "redis": summary(raw),
                "nats": summary(reference),
            }
            print(count, results["fanout"][count], flush=True)
        rates = {"gateway": [], "redis": [], "nats": []}
        refusals: list[dict[str, int]] = []

        async def gateway() -> float:
            leg = await gateway_rate(key, options.rate_messages)
            refusals.append(leg["refused"])
            return leg["rate"]

        measures = {
            "gateway": gateway,
            "redis": lambda: redis_rate(options.rate_messages),
            "nats": lambda: nats_rate(options.rate_messages),
        }
        names = list(measures)
        for round_ in range(options.rounds):  # alternating, in a rotating order
            for name in names[round_ % 3 :] + names[: round_ % 3]:
                rates[name].append(asyncio.run(measures[name]()))
        results["rate"] = {name: {"median": median(v), "runs": v} for name, v in rates.items()}
        results["rate"]["gateway_refusals_per_round"] = refusals
        results["rate"]["gateway_over_redis_per_round"] = [
            g / r for g, r in zip(rates["gateway"], rates["redis"], strict=True)
        ]
        results["rate"]["gateway_over_redis"] = median(
            [g / r for g, r in zip(rates["gateway"], rates["redis"], strict=True)]
        )
        print("rate", results["rate"], flush=True)
    finally:
        stop(server)

    if options.skip_http:
        RESULTS.parent.mkdir(exist_ok=True)
        RESULTS.write_text(json.dumps(results, indent=2))
        return
    # Django under ASGI runs each request's sync code in a thread of its own: persistent
    # connections would pile up (one per thread) until PostgreSQL refuses more. CONN_MAX_AGE=0
    # is how the ASGI server must run (docs/gateway.md); gunicorn keeps its persistent ones.
    asgi = start(
        [*uvicorn, "--port", str(ASGI_PORT), "--workers", "2"],
        ASGI_PORT,
        {**env, "CONN_MAX_AGE": "0"},
    )
    wsgi = start(
        [PYTHON, "-m", "gunicorn", "portal.wsgi:application", "--bind", f"127.0.0.1:{WSGI_PORT}"]
        + ["--workers", "2", "--log-level", "warning"],
        WSGI_PORT,
        env,
    )
    try:
        http = {"asgi": [], "wsgi": []}
        for port in (ASGI_PORT, WSGI_PORT):
            wrk_rate(port, key, 1)  # warm up
        for round_ in range(options.rounds):
            order = [("asgi", ASGI_PORT), ("wsgi", WSGI_PORT)]
            for name, port in order if round_ % 2 == 0 else reversed(order):
                http[name].append(wrk_rate(port, key, options.duration))
        results["http"] = {name: {"median": median(v), "runs": v} for name, v in http.items()}
        print("http", results["http"], flush=True)
    finally:
        stop(asgi)
        stop(wsgi)
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

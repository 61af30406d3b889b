"""End to end over the wire: two ASGI server processes sharing the real Redis, the reference
runtime connected to one, tasks and config changes made through the API of the other, and a
reconnect after the runtime's server is killed and restarted."""

from __future__ import annotations

import asyncio
import json
import queue
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from django.conf import settings

from gateway.runtime import AgentRuntime
from tests import live
from tests.gateway.conftest import SYSTEM, api_key, free_ports, in_org, make_agent

pytestmark = pytest.mark.usefixtures("unblocked")
ROOT = Path(__file__).resolve().parents[2]


def start_server(port: int) -> subprocess.Popen:
    return live.uvicorn(
        port,
        DEBUG="0",
        SECRET_KEY=settings.SECRET_KEY,
        PORTAL_SCHEME=settings.PORTAL_SCHEME,
        PORTAL_PORT=settings.PORTAL_PORT,
        LOG_LEVEL="ERROR",
    )


def stop_server(process: subprocess.Popen) -> None:
    process.kill()  # abruptly, as a crash would: the runtime must reconnect
    process.wait(timeout=10)


@contextmanager
def servers(ports: list[int]) -> Iterator[list[subprocess.Popen]]:
    processes = [start_server(port) for port in ports]
    try:
        yield processes
    finally:
        for process in processes:
            if process.poll() is None:
                stop_server(process)


@contextmanager
def runtime_thread(runtime: AgentRuntime) -> Iterator[None]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_until_complete, args=(runtime.run_forever(),))
    thread.start()
    try:
        yield
    finally:
        loop.call_soon_threadsafe(runtime.stopping.set)
        thread.join(timeout=15)


def call(method: str, port: int, host: str, path: str, key: str, body: dict) -> dict:
    request = urllib.request.Request(  # noqa: S310
        f"http://127.0.0.1:{port}{path}",
        data=json.dumps(body).encode(),
        method=method,
        headers={
            "Host": f"{host}:{port}",
            "Authorization": f"Api-Key {key}",
            "Content-Type": "application/json",
        },
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        return json.loads(response.read())


def wait_for(events: queue.Queue, kind: str, predicate=lambda detail: True, timeout: float = 15):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            got, detail = events.get(timeout=max(0.05, deadline - time.monotonic()))
        except queue.Empty:
            break
        if got == kind and predicate(detail):
            return detail
    raise AssertionError(f"no {kind} event within {timeout}s")


def test_tasks_config_and_reconnect_across_two_server_processes(pair):
    a, _ = pair
    from tools import services as tool_services

    agent = make_agent(
        a, name="E2E runner", type="e2e", tools=["search@1"], permissions=["tools:invoke"]
    )
    in_org(
        a,
        tool_services.tool_create,
        actor=SYSTEM,
        name="search",
        code="async function run(input) { console.log('searching'); return [input.q, 'found'] }",
    )
    runtime_key = api_key(a, ["agents:read", "agents:write", "tools:run"])
    operator_key = api_key(a, ["tasks:publish", "config:write", "agents:read"])
    host = a.tenant.host
    events: queue.Queue = queue.Queue()

    ports = free_ports(2)
    with servers(ports) as processes:
        runtime = AgentRuntime.for_new_instance(
            url=f"http://{host}:{ports[1]}",
            key=runtime_key,
            agent_id=str(agent.pk),
            heartbeat_seconds=0.5,
            max_backoff_seconds=1.0,
            on_event=lambda kind, detail: events.put((kind, detail)),
        )
        with runtime_thread(runtime):
            wait_for(events, "attached")
            # A task published over the API of server 1 reaches the agent on server 2.
            published = call(
                "POST",
                ports[0],
                host,
                "/api/v1/tasks/",
                operator_key,
                {"task": {"kind": "echo", "input": "hello"}},
            )
            done = wait_for(events, "task", lambda d: d["task"] == published["id"])
            assert (done["status"], done["output"]) == ("done", "hello")
            # A tool task: the runtime runs the agent's tool by name, in the platform's sandbox.
            tool = call(
                "POST",
                ports[0],
                host,
                "/api/v1/tasks/",
                operator_key,
                {
                    "agent": str(agent.pk),
                    "task": {"kind": "tool", "tool": "search", "input": {"q": "cats"}},
                },
            )
            ran = wait_for(events, "task", lambda d: d["task"] == tool["id"])
            assert (ran["status"], ran["output"]) == ("done", ["cats", "found"])
            assert (ran["tool"]["version"], ran["tool"]["logs"]) == (1, ["searching"])
            # A tool the agent does not list is refused by the runtime, and the platform.
            other = call(
                "POST",
                ports[0],
                host,
                "/api/v1/tasks/",
                operator_key,
                {"agent": str(agent.pk), "task": {"kind": "tool", "tool": "delete-all"}},
            )
            failed = wait_for(events, "task", lambda d: d["task"] == other["id"])
            assert failed["error"]["code"] == "no_such_tool"
            # A config change made through server 1 reaches the running agent.
            call(
                "PUT",
                ports[0],
                host,
                "/api/v1/config/agents.e2e/",
                operator_key,
                {"value": {"model": "large"}},
            )
            changed = wait_for(events, "config")
            assert changed["config"]["model"] == "large"
            # Kill the agent's server: it reconnects once the server is back.
            stop_server(processes[1])
            wait_for(events, "disconnected")
            processes[1] = start_server(ports[1])
            again = wait_for(events, "attached", timeout=20)
            assert again["connections"] == 2
            second = call(
                "POST",
                ports[0],
                host,
                "/api/v1/tasks/",
                operator_key,
                {"task": {"kind": "echo", "input": "again"}},
            )
            assert (
                wait_for(events, "task", lambda d: d["task"] == second["id"])["output"] == "again"
            )

    from agents.models import AgentInstance
    from gateway.models import InstanceMetric

    instance = in_org(a, lambda: AgentInstance.objects.get(pk=runtime.instance_id))
    assert instance.status == "stopped"  # the runtime confirmed the stop
    metrics = in_org(a, lambda: InstanceMetric.objects.filter(instance=instance).count())
    assert metrics >= 1


def test_the_run_agent_command_serves_an_instance_and_stops_cleanly(pair):
    from agents.models import AgentInstance

    a, _ = pair
    agent = make_agent(a, name="Command runner")
    key = api_key(a, ["agents:read", "agents:write"])
    ports = free_ports(1)
    server = start_server(ports[0])
    try:
        command = subprocess.Popen(  # noqa: S603
            [
                sys.executable,
                "manage.py",
                "run_agent",
                "--url",
                f"http://{a.tenant.host}:{ports[0]}",
            ]
            + ["--key", key, "--agent", str(agent.pk), "--heartbeat", "0.5"],
            cwd=ROOT,
            env=live.environment(LOG_LEVEL="ERROR"),
            stdout=subprocess.PIPE,
            text=True,
        )
        instance_line = command.stdout.readline().strip()
        assert instance_line.startswith("instance ")
        instance_id = instance_line.split()[1]
        assert command.stdout.readline().startswith("attached ")
        command.send_signal(signal.SIGTERM)
        assert command.wait(timeout=15) == 0
    finally:
        stop_server(server)
    instance = in_org(a, lambda: AgentInstance.objects.get(pk=instance_id))
    assert (instance.agent_id, instance.status) == (agent.pk, "stopped")

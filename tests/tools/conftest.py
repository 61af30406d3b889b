"""Fixtures of custom tools: the sandbox pool (shut down after the session) and tool factories."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session", autouse=True)
def _sandbox_pool():
    yield
    from tools import pool

    pool.shutdown_pool()


def job(code: str, input=None, **limits):
    """A run of `code` with the platform's default caps (override any with keywords)."""
    from tools.pool import Job

    values = {
        "timeout_ms": 1000,
        "memory_bytes": 32 << 20,
        "functions": [],
        "max_output": 1000,
        "max_logs": 500,
        "max_call_bytes": 1000,
        "max_calls": 10,
    }
    values.update(limits)
    return Job(code=code, input=input if input is not None else {}, **values)


def refuse(function, args):
    from tools.pool import HostError

    raise HostError("permission_denied", "nothing here")


def system():
    from core.actors import Actor

    return Actor.system("tests")


ECHO = "function run(input) { return {echo: input} }"
SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string", "maxLength": 20}},
    "required": ["name"],
    "additionalProperties": False,
}


def make_tool(name: str = "echo", code: str = ECHO, **fields):
    """A tool saved through the service (in the current organization's context)."""
    from tools import services

    return services.tool_create(actor=system(), name=name, code=code, **fields)

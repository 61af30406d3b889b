"""Concurrent requests (real threads, real PostgreSQL transactions) never over-allocate the pool."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection

from agents import services
from agents.models import Agent, AgentInstance, ResourcePool
from core.actors import Actor
from core.errors import QuotaExceeded
from tenants import context
from tests.agents.conftest import make_agent, system

CLIENTS = 20


def race(tenant, call: Callable[[int], Any]) -> tuple[list[Any], list[tuple[str, str]]]:
    """Run `call(n)` in CLIENTS threads released together; (successes, (code, limit) refusals)."""
    barrier = threading.Barrier(CLIENTS)
    successes: list[Any] = []
    refusals: list[tuple[str, str]] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def client(number: int) -> None:
        try:
            # Each thread has its own connection: it enters the tenant's context itself.
            with context.tenant_context(tenant):
                barrier.wait()
                try:
                    result = call(number)
                    with lock:
                        successes.append(result)
                except QuotaExceeded as error:
                    with lock:
                        refusals.append((error.code, error.limit))
        except BaseException as error:  # collected: an assertion in a thread would be lost
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=client, args=(n,)) for n in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    return successes, refusals


def pool_and_rows() -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """The pool's counters, and the same figures counted from the instance rows."""
    row = ResourcePool.objects.get(pk=1)
    active = list(
        AgentInstance.objects.filter(status__in=["pending", "running"]).values_list(
            "cpu_millicores", "memory_mb"
        )
    )
    counted = (len(active), sum(c for c, _ in active), sum(m for _, m in active))
    return (row.instances, row.cpu_millicores, row.memory_mb), counted


@pytest.mark.parametrize(
    ("overrides", "code", "limit_name"),
    [
        ({"max_instances": 3}, "instance_limit_reached", "max_instances"),
        ({"max_cpu_millicores": 3000}, "insufficient_cpu", "max_cpu_millicores"),
        ({"max_memory_mb": 1536}, "insufficient_memory", "max_memory_mb"),
    ],
)
def test_twenty_concurrent_requests_against_room_for_three(
    scratch_org, overrides, code, limit_name
):
    tenant = scratch_org.tenant
    with context.tenant_context(tenant):
        agent = make_agent("Racer", cpu="1", memory="512MB")
    services.organization_limits_set(actor=system(), tenant=tenant, overrides=overrides)
    actor = Actor.for_user(scratch_org.member)

    started, refused = race(
        tenant, lambda n: services.instance_request(actor=actor, agent_id=agent.pk).pk
    )

    assert len(started) == 3 and len(set(started)) == 3
    assert refused == [(code, limit_name)] * (CLIENTS - 3)
    with context.tenant_context(tenant):
        counters, counted = pool_and_rows()
        rows = AgentInstance.objects.count()
    assert counters == counted == (3, 3000, 1536)
    assert rows == 3


def test_twenty_concurrent_creations_against_room_for_three_agents(scratch_org):
    tenant = scratch_org.tenant
    services.organization_limits_set(actor=system(), tenant=tenant, overrides={"max_agents": 3})
    actor = Actor.for_user(scratch_org.admin)

    created, refused = race(
        tenant,
        lambda n: (
            services.agent_create(
                actor=actor, name=f"Agent {n}", type="worker", cpu="100m", memory="64MB"
            ).pk
        ),
    )

    assert len(created) == 3
    assert Counter(refused) == {("agent_limit_reached", "max_agents"): CLIENTS - 3}
    with context.tenant_context(tenant):
        assert (ResourcePool.objects.get(pk=1).agents, Agent.objects.count()) == (3, 3)

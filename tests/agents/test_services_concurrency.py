"""Concurrent requests (real threads, real PostgreSQL transactions) never over-allocate the pool."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from django.core.exceptions import ValidationError
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


def test_a_heartbeat_does_not_wait_for_the_pool_row(scratch_org):
    """While another transaction holds the pool row (an allocation in progress), a runtime's
    heartbeat still goes through at once; a report that frees resources does wait for it."""
    from django.db import transaction

    tenant = scratch_org.tenant
    with context.tenant_context(tenant):
        agent = make_agent("Beater", cpu="100m", memory="64MB")
        instance = services.instance_request(actor=system(), agent_id=agent.pk)
        services.instance_report(actor=system(), instance_id=instance.pk, status="running")
    holding, release = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def hold_the_pool() -> None:
        try:
            with context.tenant_context(tenant), transaction.atomic():
                ResourcePool.objects.select_for_update().get(pk=1)
                holding.set()
                release.wait(timeout=30)
        except BaseException as error:
            errors.append(error)
        finally:
            connection.close()

    holder = threading.Thread(target=hold_the_pool)
    holder.start()
    try:
        assert holding.wait(timeout=30)
        with context.tenant_context(tenant), transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL lock_timeout = '2s'")
            beat = services.instance_report(
                actor=system(), instance_id=instance.pk, status="running"
            )
        assert beat.status == "running" and beat.last_heartbeat_at is not None
        # Ending the instance returns resources: that one queues on the pool row.
        with (
            pytest.raises(Exception, match="lock timeout"),
            context.tenant_context(tenant),
            transaction.atomic(),
        ):
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL lock_timeout = '200ms'")
            services.instance_report(actor=system(), instance_id=instance.pk, status="stopped")
    finally:
        release.set()
        holder.join()
    assert errors == []
    with context.tenant_context(tenant):
        assert AgentInstance.objects.get(pk=instance.pk).status == "running"
        counters, counted = pool_and_rows()
    assert counters == counted == (1, 100, 64)


def test_heartbeats_stops_and_starts_racing_keep_the_pool_exact(scratch_org):
    tenant = scratch_org.tenant
    with context.tenant_context(tenant):
        agent = make_agent("Mixed", cpu="100m", memory="64MB")
        running = [services.instance_request(actor=system(), agent_id=agent.pk) for _ in range(6)]
        for instance in running:
            services.instance_report(actor=system(), instance_id=instance.pk, status="running")

    def call(number: int) -> Any:
        instance = running[number % len(running)]
        if number % 4 == 1:
            return services.instance_request(actor=system(), agent_id=agent.pk).status
        # Failures and heartbeats race on the same instances; what the instance's status no
        # longer allows is refused (a ValidationError), never miscounted.
        status = "failed" if number % 4 == 0 else "running"
        try:
            return services.instance_report(
                actor=system(), instance_id=instance.pk, status=status
            ).status
        except ValidationError as error:
            return error.messages[0]

    race(tenant, call)
    with context.tenant_context(tenant):
        counters, counted = pool_and_rows()
    assert counters == counted


def test_eighteen_requests_racing_the_last_slot_while_two_stops_free_others(scratch_org):
    """One slot left, eighteen threads requesting it and two stopping instances in the same
    moment: the conditional UPDATE admits exactly what fits at each commit, never one more."""
    tenant = scratch_org.tenant
    with context.tenant_context(tenant):
        agent = make_agent("Last slot", cpu="100m", memory="64MB")
        held = [services.instance_request(actor=system(), agent_id=agent.pk) for _ in range(5)]
    services.organization_limits_set(actor=system(), tenant=tenant, overrides={"max_instances": 6})
    stoppers = {0: held[0], 1: held[1]}  # two of the twenty threads stop an instance instead

    def call(number: int) -> Any:
        if number in stoppers:
            instance = stoppers[number]
            return services.instance_stop(
                actor=system(), agent_id=agent.pk, instance_id=instance.pk
            ).status
        return services.instance_request(actor=system(), agent_id=agent.pk).pk

    results, refused = race(tenant, call)

    started = [result for result in results if result != "stopped"]
    assert results.count("stopped") == 2
    # One slot was free, two more were freed: between one and three requests got in, depending
    # on when the stops committed; every other request was refused by name.
    assert 1 <= len(started) <= 3
    assert refused == [("instance_limit_reached", "max_instances")] * (18 - len(started))
    with context.tenant_context(tenant):
        counters, counted = pool_and_rows()
    assert counters == counted
    assert counters[0] == 5 - 2 + len(started) <= 6


def test_instance_writes_touch_the_pool_row_only_in_their_last_statement(acme):
    """No `SELECT ... FOR UPDATE` of the pool: its one UPDATE comes last before the commit, so
    the row is locked for the commit alone."""
    from django.test.utils import CaptureQueriesContext

    agent = make_agent("Ordered", cpu="100m", memory="64MB")
    for call in (
        lambda: services.instance_request(actor=system(), agent_id=agent.pk),
        lambda: services.instance_stop(
            actor=system(), agent_id=agent.pk, instance_id=AgentInstance.objects.get().pk
        ),
    ):
        with CaptureQueriesContext(connection) as queries:
            call()
        statements = [q["sql"] for q in queries.captured_queries]
        touching = [i for i, sql in enumerate(statements) if "agents_resourcepool" in sql]
        assert len(touching) == 1, statements
        assert statements[touching[0]].lstrip().startswith("UPDATE agents_resourcepool")
        after = statements[touching[0] + 1 :]
        assert all(sql.startswith(("RELEASE SAVEPOINT", "COMMIT")) for sql in after), after


def test_a_start_refused_at_its_commit_runs_again_to_name_the_limit(scratch_org):
    """Outside any transaction the pool's UPDATE travels with the COMMIT (core.sql.atomic): when
    it finds no room, nothing of the start is committed and the second, locked pass names the
    limit; the refusal is recorded and the pool is unchanged."""
    from audit.models import AuditEvent

    tenant = scratch_org.tenant
    with context.tenant_context(tenant):
        agent = make_agent("Full", cpu="1", memory="512MB")
    services.organization_limits_set(
        actor=system(), tenant=tenant, overrides={"max_cpu_millicores": 1500}
    )
    actor = Actor.for_user(scratch_org.member)
    with context.tenant_context(tenant):
        first = services.instance_request(actor=actor, agent_id=agent.pk)
        with pytest.raises(QuotaExceeded) as refused:
            services.instance_request(actor=actor, agent_id=agent.pk)
        assert (refused.value.code, refused.value.limit) == (
            "insufficient_cpu",
            "max_cpu_millicores",
        )
        assert list(AgentInstance.objects.values_list("pk", flat=True)) == [first.pk]
        assert pool_and_rows() == ((1, 1000, 512), (1, 1000, 512))
        results = list(
            AuditEvent.objects.filter(action="instance.requested").values_list("result", flat=True)
        )
        assert sorted(results) == ["denied", "success"]

        services.instance_stop(actor=actor, agent_id=agent.pk, instance_id=first.pk)
        assert pool_and_rows() == ((0, 0, 0), (0, 0, 0))
        again = services.instance_request(actor=actor, agent_id=agent.pk)
        assert AgentInstance.objects.get(pk=again.pk).status == "pending"

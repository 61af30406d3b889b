"""Instance-seconds on billing's ledger: counted at every running heartbeat and at the end, by
agent, in the hour they were run, exact across intervals, and priced on the invoice."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.db import transaction

from agents import metering, services
from agents.models import AgentInstance
from billing import invoicing
from billing import selectors as billing_selectors
from billing.models import Price
from tenants import context
from tests.agents.conftest import make_agent, system


def seconds_of(agent) -> int:
    """The agent's instance-seconds this month, from the usage report grouped by agent."""
    report = billing_selectors.usage_report(
        actor=system(), meter="instance_seconds", granularity="hour", group_by="agent"
    )
    return sum(bucket["groups"].get(str(agent.pk), 0) for bucket in report.buckets)


def running_since(agent, since: datetime) -> AgentInstance:
    """A running instance of `agent`, backdated to have run (and been metered) from `since`."""
    instance = services.instance_request(actor=system(), agent_id=agent.pk)
    services.instance_report(actor=system(), instance_id=instance.pk, status="running")
    AgentInstance.objects.filter(pk=instance.pk).update(started_at=since, metered_until=since)
    return AgentInstance.objects.get(pk=instance.pk)


def epoch(moment: datetime) -> int:
    return math.floor(moment.timestamp())


def test_an_interval_is_split_at_each_hour_in_whole_seconds():
    since = datetime(2026, 11, 30, 22, 59, 30, 400_000, tzinfo=UTC)
    until = datetime(2026, 12, 1, 0, 0, 10, 900_000, tzinfo=UTC)

    counts = metering.instance_seconds(agent_id="a1", since=since, until=until)

    assert [(count.at, count.amount) for count in counts] == [
        (datetime(2026, 11, 30, 22, 59, 30, tzinfo=UTC), 30),
        (datetime(2026, 11, 30, 23, tzinfo=UTC), 3600),
        (datetime(2026, 12, 1, 0, tzinfo=UTC), 10),
    ]
    assert {count.meter for count in counts} == {"instance_seconds"}
    assert all(count.groups == {"agent": "a1"} for count in counts)
    # Consecutive intervals add up to the whole one: nothing is lost to rounding.
    middle = datetime(2026, 11, 30, 23, 30, 0, 999_999, tzinfo=UTC)
    halves = metering.instance_seconds(
        agent_id="a1", since=since, until=middle
    ) + metering.instance_seconds(agent_id="a1", since=middle, until=until)
    assert sum(c.amount for c in halves) == sum(c.amount for c in counts) == 3640
    assert metering.instance_seconds(agent_id="a1", since=until, until=until) == []


def test_heartbeats_count_the_seconds_so_far_and_the_stop_counts_the_rest(
    acme, django_capture_on_commit_callbacks
):
    agent = make_agent("Metered", cpu="100m", memory="64MB")
    start = datetime.now(UTC) - timedelta(seconds=95, microseconds=300_000)
    with django_capture_on_commit_callbacks(execute=True):
        instance = running_since(agent, start)
        beat = services.instance_report(actor=system(), instance_id=instance.pk, status="running")
    so_far = seconds_of(agent)
    assert beat.metered_until == beat.last_heartbeat_at
    assert so_far == epoch(beat.metered_until) - epoch(start) >= 95

    with django_capture_on_commit_callbacks(execute=True):
        stopping = services.instance_stop(actor=system(), agent_id=agent.pk, instance_id=beat.pk)
        # While it shuts down, and when it confirms, nothing more is counted.
        services.instance_report(actor=system(), instance_id=beat.pk, status="stopping")
        services.instance_report(actor=system(), instance_id=beat.pk, status="stopped")

    assert stopping.status == "stopping"
    assert stopping.metered_until == stopping.stopped_at
    assert seconds_of(agent) == epoch(stopping.stopped_at) - epoch(start)


def test_other_organizations_and_other_agents_see_none_of_it(
    org, other_org, in_tenant, django_capture_on_commit_callbacks
):
    with in_tenant(org):
        agent = make_agent("Mine", cpu="100m", memory="64MB")
        idle = make_agent("Idle", cpu="100m", memory="64MB")
        with django_capture_on_commit_callbacks(execute=True):
            instance = running_since(agent, datetime.now(UTC) - timedelta(seconds=30))
            services.instance_report(actor=system(), instance_id=instance.pk, status="failed")
        assert seconds_of(agent) >= 30
        assert seconds_of(idle) == 0
    with in_tenant(other_org):
        assert seconds_of(agent) == 0


def test_an_instance_that_never_ran_counts_nothing(acme, django_capture_on_commit_callbacks):
    agent = make_agent("Never ran", cpu="100m", memory="64MB")
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        instance = services.instance_request(actor=system(), agent_id=agent.pk)
        services.instance_stop(actor=system(), agent_id=agent.pk, instance_id=instance.pk)
    assert seconds_of(agent) == 0
    assert AgentInstance.objects.get(pk=instance.pk).metered_until is None
    assert callbacks  # the events were published: only the count was left out


def test_a_heartbeat_that_rolls_back_counts_nothing(acme, django_capture_on_commit_callbacks):
    agent = make_agent("Rolled back", cpu="100m", memory="64MB")
    start = datetime.now(UTC) - timedelta(seconds=60)
    with django_capture_on_commit_callbacks(execute=True):
        instance = running_since(agent, start)
        with pytest.raises(RuntimeError), transaction.atomic():
            services.instance_report(actor=system(), instance_id=instance.pk, status="running")
            raise RuntimeError("the caller failed after the heartbeat")

    assert seconds_of(agent) == 0
    assert AgentInstance.objects.get(pk=instance.pk).metered_until == start


def test_deleting_an_agent_counts_its_running_instances(acme, django_capture_on_commit_callbacks):
    agent = make_agent("Deleted", cpu="100m", memory="64MB")
    start = datetime.now(UTC) - timedelta(seconds=40)
    with django_capture_on_commit_callbacks(execute=True):
        running_since(agent, start)
        running_since(agent, start)
        services.agent_delete(actor=system(), agent_id=agent.pk)
    assert seconds_of(agent) >= 80


@pytest.fixture
def instance_price():
    """A staff price for instance time: 0.09 USD an hour (committed: the organization is)."""
    with context.public_context():
        price = Price.objects.create(
            meter="instance_seconds", per_units=3600, unit_price=Decimal("0.09")
        )
    yield price
    with context.public_context():
        price.delete()


def test_last_months_seconds_are_priced_on_its_invoice(scratch_org, instance_price):
    """A run from an hour before this month began until now: last month's invoice has exactly
    that hour, at the price per hour."""
    tenant = scratch_org.tenant
    this_month = datetime.now(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    last_month = (this_month - timedelta(days=1)).replace(day=1)
    with context.tenant_context(tenant):
        agent = make_agent("Long runner", cpu="100m", memory="64MB")
        instance = running_since(agent, this_month - timedelta(hours=1))
        services.instance_report(actor=system(), instance_id=instance.pk, status="running")

    lines = invoicing.invoice_lines(tenant, last_month, this_month)

    (line,) = [line for line in lines if line.meter == "instance_seconds"]
    assert (line.quantity, line.unit_price, line.amount) == (
        Decimal(3600),
        Decimal("0.000025"),
        Decimal("0.09"),
    )

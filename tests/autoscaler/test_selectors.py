"""What the autoscaler reads: per-minute means of the running instances, memory as a share of
the allocation, and each instance's latest load."""

from __future__ import annotations

from django.utils import timezone

from agents import services as agent_services
from autoscaler import selectors
from gateway import selectors as gateway_selectors
from tests.agents.conftest import system
from tests.autoscaler.conftest import report, running_agent


def test_minutes_average_the_running_instances_only(acme):
    agent, (first, second, gone) = running_agent("Measured", instances=3, cpu=[10, 20])
    report(second, cpu=[30, 40], queue=[4, 6])
    report(gone, cpu=[100, 100], queue=[50, 50])
    agent_services.instance_stop(actor=system(), agent_id=agent.pk, instance_id=gone.pk)

    minutes = selectors.recent_minutes(agent, now=timezone.now())

    assert [(m.instances, m.cpu, m.queue) for m in minutes] == [(2, 20.0, 2.0), (2, 30.0, 3.0)]
    # 100 MiB reported of the agent's 512 MiB per instance
    assert [round(m.memory, 2) for m in minutes] == [19.53, 19.53]


def test_latest_load_is_each_instances_newest_minute(acme):
    _, (first, second) = running_agent("Measured", instances=2, cpu=[10, 20], queue=[1, 2])
    report(second, cpu=[70], queue=[9])

    load = gateway_selectors.instance_latest_load([first.pk, second.pk])

    assert load == {first.pk: (2, 20.0), second.pk: (9, 70.0)}

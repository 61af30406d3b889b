"""The portal's live pieces: the agent page's metrics panel, the dashboard feed, the selector."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.core.exceptions import PermissionDenied
from django.utils import timezone

from agents import services
from core.actors import Actor
from gateway import selectors
from gateway.models import InstanceMetric
from tests.agents.conftest import make_agent, system


def record(instance, minute, cpu: float) -> InstanceMetric:
    return InstanceMetric.objects.create(
        instance=instance,
        agent_id=instance.agent_id,
        minute=minute,
        cpu_percent=cpu,
        memory_mb=10,
        queue_depth=0,
        response_ms=1,
        tasks_done=3,
    )


def test_recent_metrics_cover_the_last_15_minutes_of_one_agent(org, in_tenant):
    now = timezone.now().replace(second=0, microsecond=0)
    with in_tenant(org):
        agent, other = make_agent("Measured"), make_agent("Other")
        instance = services.instance_request(actor=system(), agent_id=agent.pk)
        elsewhere = services.instance_request(actor=system(), agent_id=other.pk)
        record(instance, now - timedelta(minutes=20), 1)
        record(instance, now - timedelta(minutes=2), 2)
        record(instance, now, 3)
        record(elsewhere, now, 9)
        points = selectors.agent_metrics_recent(actor=system(), agent_id=agent.pk)
        with pytest.raises(PermissionDenied):
            selectors.agent_metrics_recent(actor=Actor.anonymous(), agent_id=agent.pk)
    assert [p["cpu_percent"] for p in points] == [2, 3]
    assert {p["instance"] for p in points} == {str(instance.pk)}


@pytest.mark.parametrize("role", ["viewer", "member", "admin", "owner"])
def test_the_agent_page_carries_the_live_panel_with_its_metrics(org, in_tenant, client_for, role):
    with in_tenant(org):
        agent = make_agent("Panel")
        instance = services.instance_request(actor=system(), agent_id=agent.pk)
        record(instance, timezone.now().replace(second=0, microsecond=0), 42.0)
    response = client_for(org, org.user(role)).get(f"/agents/{agent.pk}/")
    html = response.content.decode()
    assert response.status_code == 200
    assert f'data-live-metrics="{agent.pk}"' in html
    assert f'data-live-subjects="instance.> agents.{agent.pk}.metrics"' in html
    initial = html.split('id="live-metrics-initial" type="application/json">')[1].split("<")[0]
    assert [p["cpu_percent"] for p in json.loads(initial)] == [42.0]
    assert "gateway/live.js" in html


def test_another_organizations_agent_page_is_a_404(org, other_org, in_tenant, client_for):
    with in_tenant(other_org):
        theirs = make_agent("Theirs")
    assert client_for(org, org.admin).get(f"/agents/{theirs.pk}/").status_code == 404


def test_the_dashboard_and_config_page_subscribe_live(org, client_for):
    client = client_for(org, org.viewer)
    dashboard = client.get("/").content.decode()
    assert "data-live-feed" in dashboard
    assert 'data-live-subjects="instance.> agent.> config.changed audit.alert"' in dashboard
    config = client.get("/config/").content.decode()
    assert 'data-live-subjects="config.changed"' in config

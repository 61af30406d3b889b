"""The heartbeat check command."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.utils import timezone

from tests.gateway.conftest import in_org, make_agent, make_instance

pytestmark = pytest.mark.usefixtures("unblocked")


def test_check_heartbeats_fails_silent_instances_in_every_organization(pair):
    from agents.models import AgentInstance

    a, b = pair
    silent_a, silent_b = make_instance(a, make_agent(a)), make_instance(b, make_agent(b))
    old = timezone.now() - timedelta(minutes=5)
    for org, instance in ((a, silent_a), (b, silent_b)):
        in_org(
            org,
            lambda i=instance: AgentInstance.objects.filter(pk=i.pk).update(
                status="running", last_heartbeat_at=old
            ),
        )
    out = StringIO()
    call_command("check_heartbeats", "--timeout", "60", stdout=out)
    assert f"{silent_a.pk} failed" in out.getvalue()
    assert f"{silent_b.pk} failed" in out.getvalue()
    assert in_org(a, lambda: AgentInstance.objects.get(pk=silent_a.pk).status) == "failed"
    assert in_org(b, lambda: AgentInstance.objects.get(pk=silent_b.pk).status) == "failed"

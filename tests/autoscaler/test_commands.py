"""`manage.py autoscale`: one pass over every active organization, each in its own schema."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from agents.models import AgentInstance
from autoscaler.models import ScalingDecision
from tenants import context
from tests.autoscaler.conftest import running_agent


def test_once_scales_each_organization_in_its_own_context(org, other_org, in_tenant):
    with in_tenant(org):
        hot, _ = running_agent("Hot", instances=2, cpu=[90, 90, 90])
    with in_tenant(other_org):
        cold, _ = running_agent("Cold", instances=2, cpu=[3, 2, 1])
    out = StringIO()

    call_command("autoscale", "--once", stdout=out)

    assert out.getvalue().splitlines() == [
        "acme: Hot up 2 -> 3: Scaled up to 3. (CPU 90% or more (≥ 75) for 3 min)",
        "globex: Cold down 2 -> 1: Scaled down to 1. "
        "(CPU 3% at most (≤ 25); queue depth 0 per instance at most (≤ 1) for 3 min)",
    ]
    assert context.current_tenant() is None
    with in_tenant(org):
        assert list(ScalingDecision.objects.values_list("agent_id", "to_count")) == [(hot.pk, 3)]
        assert AgentInstance.objects.filter(agent=hot, status="pending").count() == 1
    with in_tenant(other_org):
        assert list(ScalingDecision.objects.values_list("agent_id", "to_count")) == [(cold.pk, 1)]
        assert AgentInstance.objects.filter(agent=cold, status="stopping").count() == 1


def test_org_limits_the_pass_to_one_organization(org, other_org, in_tenant):
    with in_tenant(org):
        running_agent("Hot", instances=1, cpu=[90, 90, 90])
    with in_tenant(other_org):
        running_agent("Also hot", instances=1, cpu=[90, 90, 90])

    call_command("autoscale", "--org", "globex", stdout=StringIO())

    with in_tenant(org):
        assert not ScalingDecision.objects.exists()
    with in_tenant(other_org):
        assert ScalingDecision.objects.count() == 1


def test_once_and_every_exclude_each_other_and_every_is_positive(db):
    with pytest.raises(CommandError):
        call_command("autoscale", "--once", "--every", "5")
    with pytest.raises(CommandError):
        call_command("autoscale", "--every", "-1")

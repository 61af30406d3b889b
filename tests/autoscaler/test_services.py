"""The autoscaler's services: decisions carried out through the instance services (pool limits,
audit, events), and the policy an admin sets."""

from __future__ import annotations

import psycopg
import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import connection

from agents import services as agent_services
from agents.models import Agent, AgentInstance
from audit.models import AuditEvent
from autoscaler import selectors, services
from autoscaler.models import ScalingDecision, ScalingPolicy
from core.actors import Actor
from tests.agents.conftest import make_agent, system
from tests.agents.test_services import limit
from tests.audit.conftest import events_after, head
from tests.autoscaler.conftest import POLICY, report, running_agent

AUTOSCALER = Actor.system("autoscaler")
HOT, COLD = [90, 88, 92], [5, 8, 4]


def statuses(agent) -> list[str]:
    return sorted(AgentInstance.objects.filter(agent=agent).values_list("status", flat=True))


def test_a_hot_agent_scales_up_by_half_recorded_and_announced_after_commit(
    acme, listen, django_capture_on_commit_callbacks
):
    agent, _ = running_agent("Hot", instances=2, cpu=HOT)
    receive = listen(acme.tenant, "scaling.decided")
    start = head()

    with django_capture_on_commit_callbacks(execute=True):
        decision = services.agent_autoscale(actor=AUTOSCALER, agent=agent)

    assert (decision.direction, decision.from_count, decision.wanted_count, decision.to_count) == (
        "up",
        2,
        3,
        3,
    )
    assert decision.reason == "CPU 88% or more (≥ 75) for 3 min"
    assert decision.outcome == "Scaled up to 3."
    assert decision.metrics == {"cpu": [90.0, 88.0, 92.0], "queue": [0.0, 0.0, 0.0]}
    assert statuses(agent) == ["pending", "running", "running"]
    recorded = [(e.action, e.actor_label, e.result) for e in events_after(start)]
    assert recorded == [
        ("instance.requested", "autoscaler", "success"),
        ("scaling.decided", "autoscaler", "success"),
    ]
    event = events_after(start)[-1]
    assert (event.resource_type, event.resource_id) == ("agent", str(agent.pk))
    assert event.details["name"] == "Hot" and event.details["outcome"] == "Scaled up to 3."
    message = receive()
    assert message["data"] == {
        "agent_id": str(agent.pk),
        "decided_at": decision.decided_at.isoformat(),
        "direction": "up",
        "from": 2,
        "wanted": 3,
        "to": 3,
        "reason": "CPU 88% or more (≥ 75) for 3 min",
        "outcome": "Scaled up to 3.",
    }


def test_the_next_pass_holds_while_the_new_instance_is_pending_and_in_cooldown(acme):
    agent, _ = running_agent("Hot", instances=2, cpu=HOT)
    services.agent_autoscale(actor=AUTOSCALER, agent=agent)
    start = head()

    assert services.agent_autoscale(actor=AUTOSCALER, agent=agent) is None

    assert events_after(start) == [] and ScalingDecision.objects.filter(agent=agent).count() == 1
    state = selectors.state_get(
        actor=AUTOSCALER, agent=agent, now=ScalingDecision.objects.get().decided_at
    )
    assert (state.active, state.pending, state.evaluation.direction) == (3, 1, "hold")


def test_a_full_pool_scales_as_far_as_it_can_and_says_so(acme):
    agent, _ = running_agent("Big", instances=3, cpu=HOT)  # wants 3 + 2 = 5
    limit(acme, max_instances=4)

    decision = services.agent_autoscale(actor=AUTOSCALER, agent=agent)

    assert (decision.from_count, decision.wanted_count, decision.to_count) == (3, 5, 4)
    assert decision.outcome == (
        "Pool full (4 of 4 instances are in use.): scaled to 4 of wanted 5."
    )
    assert statuses(agent) == ["pending", "running", "running", "running"]


def test_a_refusal_by_the_pool_is_a_decision_with_its_cooldown_not_an_error(acme):
    agent, _ = running_agent("Stuck", instances=2, cpu=HOT)
    limit(acme, max_instances=2)
    start = head()

    decision = services.agent_autoscale(actor=AUTOSCALER, agent=agent)

    assert (decision.from_count, decision.wanted_count, decision.to_count) == (2, 3, 2)
    assert decision.outcome == "Refused by the pool (2 of 2 instances are in use.): stayed at 2."
    assert [(e.action, e.result) for e in events_after(start)] == [
        ("instance.requested", "denied"),
        ("scaling.decided", "success"),
    ]
    assert services.agent_autoscale(actor=AUTOSCALER, agent=agent) is None  # cooling down
    assert statuses(agent) == ["running", "running"]


def test_a_cold_agent_stops_its_least_loaded_instance(acme):
    agent, (first, busy, idle) = running_agent("Cold", instances=3, cpu=COLD)
    report(busy, cpu=[5], queue=[1])  # this minute: one task waiting, still under queue_down
    report(first, cpu=[6], queue=[1])

    decision = services.agent_autoscale(actor=AUTOSCALER, agent=agent)

    assert (decision.direction, decision.from_count, decision.to_count) == ("down", 3, 2)
    assert decision.outcome == "Scaled down to 2."
    assert AgentInstance.objects.get(pk=idle.pk).status == "stopping"
    assert AgentInstance.objects.get(pk=busy.pk).status == "running"


def test_a_pending_instance_is_stopped_before_running_ones(acme):
    agent, _ = running_agent("Cold", instances=2, cpu=COLD, max_instances=2)
    services.policy_set(actor=system(), agent_id=agent.pk, **{**POLICY, "max_instances": 5})
    pending = agent_services.instance_request(actor=system(), agent_id=agent.pk)

    decision = services.agent_autoscale(actor=AUTOSCALER, agent=agent)

    assert (decision.direction, decision.from_count, decision.to_count) == ("down", 3, 2)
    assert AgentInstance.objects.get(pk=pending.pk).status == "stopped"
    assert statuses(agent) == ["running", "running", "stopped"]


def test_only_the_system_scales(acme):
    agent, _ = running_agent("Hot", instances=1, cpu=HOT)
    with pytest.raises(PermissionDenied):
        services.agent_autoscale(actor=Actor.for_user(acme.owner), agent=agent)
    with pytest.raises(PermissionDenied):
        services.organization_autoscale(actor=Actor.for_user(acme.owner))
    assert statuses(agent) == ["running"]


def test_a_pass_visits_the_enabled_policies_only(acme):
    hot, _ = running_agent("Hot", instances=1, cpu=HOT)
    off, _ = running_agent("Off", instances=1, cpu=HOT, is_enabled=False)
    idle = make_agent("No policy")

    decisions = services.organization_autoscale(actor=AUTOSCALER)

    assert [(d.agent_id, d.to_count) for d in decisions] == [(hot.pk, 2)]
    assert statuses(off) == ["running"] and statuses(idle) == []


def test_a_second_autoscaler_skips_an_organization_being_scaled(acme):
    hot, _ = running_agent("Hot", instances=1, cpu=HOT)
    settings_dict = connection.settings_dict
    with psycopg.connect(
        host=settings_dict["HOST"],
        port=settings_dict["PORT"],
        user=settings_dict["USER"],
        dbname=settings_dict["NAME"],
        autocommit=True,
    ) as other:
        held = other.execute(
            "SELECT pg_try_advisory_lock(%s, hashtext(%s))",
            [services.LOCK_CLASS, acme.tenant.schema_name],
        ).fetchone()[0]
        assert held
        assert services.organization_autoscale(actor=AUTOSCALER) == []
        other.execute(
            "SELECT pg_advisory_unlock(%s, hashtext(%s))",
            [services.LOCK_CLASS, acme.tenant.schema_name],
        )
    assert [d.to_count for d in services.organization_autoscale(actor=AUTOSCALER)] == [2]


def test_deleting_an_agent_deletes_its_policy_and_decisions(acme):
    agent, _ = running_agent("Hot", instances=1, cpu=HOT)
    services.agent_autoscale(actor=AUTOSCALER, agent=agent)

    agent_services.agent_delete(actor=system(), agent_id=agent.pk)

    assert not ScalingPolicy.objects.exists() and not ScalingDecision.objects.exists()


def test_reading_decisions_needs_agents_read(acme):
    agent, _ = running_agent("Hot", instances=1, cpu=HOT)
    with pytest.raises(PermissionDenied):
        selectors.decision_list(actor=Actor.anonymous(), agent=agent)


# --- The policy ------------------------------------------------------------------------------


def test_a_policy_starts_as_the_disabled_defaults():
    agent = Agent(name="x", cpu_millicores=1, memory_mb=1)
    policy = ScalingPolicy(agent=agent)
    assert not policy.is_enabled and (policy.min_instances, policy.max_instances) == (1, 5)


def test_setting_a_policy_records_and_announces_what_changed(
    acme, listen, django_capture_on_commit_callbacks
):
    agent = make_agent("Tuned")
    receive = listen(acme.tenant, "scaling.policy_changed")
    admin = Actor.for_user(acme.admin)
    with django_capture_on_commit_callbacks(execute=True):
        services.policy_set(actor=admin, agent_id=agent.pk, **POLICY)
    first = receive()
    start = head()

    with django_capture_on_commit_callbacks(execute=True):
        services.policy_set(actor=admin, agent_id=agent.pk, **{**POLICY, "max_instances": 8})

    assert first["data"]["is_enabled"] is True
    assert receive()["data"] == {
        "agent_id": str(agent.pk),
        **POLICY,
        "max_instances": 8,
        "changed": ["max_instances"],
    }
    [event] = events_after(start)
    assert (event.action, event.actor_label, event.resource_id) == (
        "scaling.policy_changed",
        "admin@acme.test",
        str(agent.pk),
    )
    assert event.details["changed"] == ["max_instances"] and event.details["name"] == "Tuned"
    stored = ScalingPolicy.objects.get(agent=agent)
    assert (stored.max_instances, stored.updated_by) == (8, "admin@acme.test")


def test_the_same_policy_again_changes_nothing(acme, django_capture_on_commit_callbacks):
    agent = make_agent("Tuned")
    services.policy_set(actor=system(), agent_id=agent.pk, **POLICY)
    start = head()
    with django_capture_on_commit_callbacks() as callbacks:
        services.policy_set(actor=system(), agent_id=agent.pk, **POLICY)
    assert events_after(start) == [] and callbacks == []


@pytest.mark.parametrize(
    ("changes", "errors"),
    [
        ({"min_instances": 0}, {"min_instances": ["out_of_range"]}),
        ({"max_instances": 101}, {"max_instances": ["out_of_range"]}),
        ({"min_instances": 4, "max_instances": 3}, {"max_instances": ["below_minimum"]}),
        ({"window_minutes": 31}, {"window_minutes": ["out_of_range"]}),
        ({"scale_up_cooldown_seconds": -1}, {"scale_up_cooldown_seconds": ["out_of_range"]}),
        ({"cpu_down": 80.0}, {"cpu_down": ["not_below_up"]}),
        ({"cpu_down": None}, {"cpu_down": ["pair"]}),
        ({"memory_up": 90.0}, {"memory_down": ["pair"]}),
        ({"queue_up": float("nan")}, {"queue_up": ["out_of_range"]}),
        ({"response_up": True}, {"response_up": ["out_of_range"]}),
        ({"is_enabled": "yes"}, {"is_enabled": ["invalid"]}),
        (
            {"cpu_up": None, "cpu_down": None, "queue_up": None, "queue_down": None},
            {"is_enabled": ["no_metric"]},
        ),
        ({"surprise": 1}, {"surprise": ["unknown"]}),
    ],
)
def test_bad_policies_are_refused_field_by_field_and_change_nothing(acme, changes, errors):
    agent = make_agent("Tuned")
    start = head()
    with pytest.raises(ValidationError) as caught:
        services.policy_set(actor=system(), agent_id=agent.pk, **{**POLICY, **changes})
    assert {f: [e.code for e in es] for f, es in caught.value.error_dict.items()} == errors
    assert not ScalingPolicy.objects.filter(agent=agent).exists() and events_after(start) == []


def test_a_missing_field_is_required(acme):
    agent = make_agent("Tuned")
    fields = {name: value for name, value in POLICY.items() if name != "window_minutes"}
    with pytest.raises(ValidationError) as caught:
        services.policy_set(actor=system(), agent_id=agent.pk, **fields)
    assert [e.code for e in caught.value.error_dict["window_minutes"]] == ["required"]


@pytest.mark.parametrize(
    ("role", "allowed"), [("viewer", False), ("member", False), ("admin", True), ("owner", True)]
)
def test_role_matrix_for_the_policy(acme, role, allowed, django_capture_on_commit_callbacks):
    agent = make_agent("Tuned")
    start = head()
    actor = Actor.for_user(acme.user(role))
    with django_capture_on_commit_callbacks() as callbacks:
        if allowed:
            services.policy_set(actor=actor, agent_id=agent.pk, **POLICY)
        else:
            with pytest.raises(PermissionDenied):
                services.policy_set(actor=actor, agent_id=agent.pk, **POLICY)
    assert ScalingPolicy.objects.filter(agent=agent).exists() is allowed
    if not allowed:
        assert [(e.action, e.result) for e in events_after(start)] == [
            ("scaling.policy_changed", "denied")
        ]
        assert callbacks == []


def test_another_organizations_agent_is_not_found(org, other_org, in_tenant):
    with in_tenant(other_org):
        theirs = make_agent("Theirs")
    with in_tenant(org), pytest.raises(Agent.DoesNotExist):
        services.policy_set(actor=Actor.for_user(org.admin), agent_id=theirs.pk, **POLICY)
    with in_tenant(other_org):
        assert not ScalingPolicy.objects.exists()
        assert not AuditEvent.objects.filter(action="scaling.policy_changed").exists()

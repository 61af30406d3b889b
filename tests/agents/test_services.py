"""Agent, instance and config services: rules, limits, roles, refusals, events."""

from __future__ import annotations

import pytest
from django.core.exceptions import PermissionDenied, ValidationError

from agents import selectors, services
from agents.models import Agent, AgentInstance, ConfigKey, ResourcePool
from audit.models import AuditEvent
from core.actors import Actor
from core.errors import QuotaExceeded
from tests.agents.conftest import make_agent, system
from tests.audit.conftest import events_after, head


def pool() -> tuple[int, int, int, int]:
    row = ResourcePool.objects.get(pk=1)
    return (row.agents, row.instances, row.cpu_millicores, row.memory_mb)


def limit(org, **overrides) -> None:
    services.organization_limits_set(actor=system(), tenant=org.tenant, overrides=overrides)


def field_errors(caught) -> dict[str, list[str]]:
    return {field: [e.code for e in errors] for field, errors in caught.value.error_dict.items()}


def snapshot() -> tuple:
    """Everything the services write in the organization's schema, to compare before and after."""
    return (
        pool(),
        sorted(Agent.objects.values_list("id", "name", "cpu_millicores", "updated_at")),
        sorted(AgentInstance.objects.values_list("id", "status")),
        sorted(ConfigKey.objects.values_list("key", "version")),
    )


# --- Agent definitions -----------------------------------------------------------------------


def test_an_agent_is_created_with_parsed_resources_and_counted_in_the_pool(acme):
    before = pool()
    start = head()

    agent = services.agent_create(
        actor=Actor.for_user(acme.member),
        name="  Summarizer ",
        type="assistant",
        description="Summarizes tickets.",
        config={"model": "large"},
        cpu="0.25",
        memory="1.5Gi",
        permissions=["messages:read", "tasks:receive"],
        tools=["search", "http.get"],
    )

    stored = Agent.objects.get(pk=agent.pk)
    assert (stored.name, stored.type, stored.cpu_millicores, stored.memory_mb) == (
        "Summarizer",
        "assistant",
        250,
        1536,
    )
    assert (stored.config, stored.permissions, stored.tools) == (
        {"model": "large"},
        ["messages:read", "tasks:receive"],
        ["search", "http.get"],
    )
    assert stored.created_by == acme.member.email
    assert pool() == (before[0] + 1, *before[1:])
    (event,) = events_after(start)
    assert (event.action, event.resource_id, event.result) == (
        "agent.created",
        str(agent.pk),
        "success",
    )


def test_every_bad_field_is_reported_at_once_and_nothing_is_written(acme):
    before = snapshot()

    with pytest.raises(ValidationError) as caught:
        services.agent_create(
            actor=system(),
            name="",
            type="Not A Type",
            config=[1, 2],
            cpu="-1",
            memory="512",
            permissions=["launch:missiles"],
            tools=["Bad Tool"],
        )

    assert field_errors(caught) == {
        "name": ["required"],
        "type": ["invalid_type"],
        "config": ["not_an_object"],
        "cpu": ["invalid"],
        "memory": ["invalid"],
        "permissions": ["unknown_permissions"],
        "tools": ["invalid_tools"],
    }
    assert snapshot() == before


def test_required_fields_and_unknown_fields(acme):
    with pytest.raises(ValidationError) as missing:
        services.agent_create(actor=system(), name="x")
    with pytest.raises(ValidationError) as unknown:
        make_agent("x", owner="me")

    assert field_errors(missing) == {
        "type": ["required"],
        "cpu": ["required"],
        "memory": ["required"],
    }
    assert list(unknown.value.error_dict) == ["owner"]


def test_names_are_unique_ignoring_case(acme):
    make_agent("Router One")

    with pytest.raises(ValidationError) as caught:
        make_agent("router one")

    assert field_errors(caught) == {"name": ["name_taken"]}


def test_resources_above_the_per_instance_maximum_are_refused_naming_the_field(acme):
    # The team plan allows 4 cores and 16 GB per instance.
    with pytest.raises(ValidationError) as caught:
        make_agent("Big", cpu="4.5", memory="17GB")

    assert field_errors(caught) == {"cpu": ["above_maximum"], "memory": ["above_maximum"]}
    assert make_agent("Largest", cpu="4", memory="16GB").cpu_millicores == 4000


def test_permissions_outside_the_plan_are_refused_naming_them(acme):
    with pytest.raises(ValidationError) as caught:
        make_agent("Spawner", permissions=["messages:read", "agents:spawn"])

    error = caught.value.error_dict["permissions"][0]
    assert (error.code, error.message) == (
        "permissions_not_allowed",
        "Not allowed by your plan: agents:spawn.",
    )


def test_a_downgrade_keeps_the_request_but_grants_only_what_the_plan_allows(acme):
    from organizations import services as tenant_services
    from tenants import context
    from tenants.models import Plan

    agent = make_agent("Fetcher", permissions=["messages:read", "http:outbound"])
    with context.public_context():
        free = Plan.objects.get(slug="free")
    tenant_services.tenant_update(
        actor=system(), tenant=acme.tenant, name=acme.tenant.name, plan=free
    )
    limits = selectors.limits_get()

    assert Agent.objects.get(pk=agent.pk).permissions == ["messages:read", "http:outbound"]
    assert selectors.granted_permissions(agent=agent, limits=limits) == ["messages:read"]
    with pytest.raises(ValidationError):
        services.agent_update(actor=system(), agent_id=agent.pk, permissions=["http:outbound"])


def test_an_update_changes_only_the_given_fields_and_says_which(
    acme, django_capture_on_commit_callbacks
):
    agent = make_agent("Editor", description="old")
    start = head()

    with django_capture_on_commit_callbacks() as callbacks:
        updated = services.agent_update(
            actor=Actor.for_user(acme.member), agent_id=str(agent.pk), description="new", cpu="1"
        )

    assert (updated.description, updated.cpu_millicores, updated.memory_mb) == ("new", 1000, 512)
    (event,) = events_after(start)
    assert event.action == "agent.updated"
    assert event.details["changes"] == {
        "description": {"from": "old", "to": "new"},
        "cpu_millicores": {"from": 500, "to": 1000},
    }
    assert len(callbacks) == 1


def test_an_update_that_changes_nothing_records_nothing(acme, django_capture_on_commit_callbacks):
    agent = make_agent("Same", description="same")
    start = head()

    with django_capture_on_commit_callbacks() as callbacks:
        services.agent_update(actor=system(), agent_id=agent.pk, description="same", cpu="500m")

    assert events_after(start) == [] and callbacks == []


def test_renaming_onto_another_agents_name_is_refused(acme):
    make_agent("First")
    second = make_agent("Second")

    with pytest.raises(ValidationError) as caught:
        services.agent_update(actor=system(), agent_id=second.pk, name="FIRST")

    assert field_errors(caught) == {"name": ["name_taken"]}
    assert Agent.objects.get(pk=second.pk).name == "Second"


@pytest.mark.parametrize("agent_id", ["not-a-uuid", "00000000-0000-0000-0000-000000000000", None])
def test_unknown_agents_are_not_found(acme, agent_id):
    with pytest.raises(Agent.DoesNotExist):
        services.agent_update(actor=system(), agent_id=agent_id, name="x")
    with pytest.raises(Agent.DoesNotExist):
        services.agent_delete(actor=system(), agent_id=agent_id)
    with pytest.raises(Agent.DoesNotExist):
        services.instance_request(actor=system(), agent_id=agent_id)


def test_deleting_an_agent_stops_its_instances_and_frees_everything(
    acme, django_capture_on_commit_callbacks
):
    before = pool()
    agent = make_agent("Doomed", cpu="1", memory="1GB")
    first = services.instance_request(actor=system(), agent_id=agent.pk)
    services.instance_request(actor=system(), agent_id=agent.pk)
    services.instance_stop(actor=system(), agent_id=agent.pk, instance_id=first.pk)
    start = head()

    with django_capture_on_commit_callbacks() as callbacks:
        services.agent_delete(actor=Actor.for_user(acme.member), agent_id=agent.pk)

    assert pool() == before
    assert not Agent.objects.filter(pk=agent.pk).exists()
    assert not AgentInstance.objects.filter(agent_id=agent.pk).exists()
    assert [(e.action, e.details.get("reason")) for e in events_after(start)] == [
        ("instance.stopped", "agent_deleted"),
        ("agent.deleted", None),
    ]
    assert events_after(start)[1].details == {"name": "Doomed", "stopped_instances": 1}
    assert len(callbacks) == 2


# --- Instances -------------------------------------------------------------------------------


def test_an_instance_is_allocated_in_its_agents_namespace(acme):
    agent = make_agent("Worker", cpu="250m", memory="256MB")
    before = pool()

    instance = services.instance_request(actor=Actor.for_user(acme.member), agent_id=agent.pk)

    assert instance.status == "pending"
    assert instance.namespace == f"tenant.{acme.tenant.public_id}.agents.{agent.pk}"
    assert (instance.cpu_millicores, instance.memory_mb) == (250, 256)
    assert instance.requested_by == acme.member.email
    assert pool() == (before[0], before[1] + 1, before[2] + 250, before[3] + 256)


def test_stopping_frees_the_resources_and_a_second_stop_changes_nothing(
    acme, django_capture_on_commit_callbacks
):
    agent = make_agent("Worker")
    before = pool()
    instance = services.instance_request(actor=system(), agent_id=agent.pk)
    start = head()

    with django_capture_on_commit_callbacks() as callbacks:
        stopped = services.instance_stop(
            actor=Actor.for_user(acme.member), agent_id=agent.pk, instance_id=instance.pk
        )
        again = services.instance_stop(actor=system(), agent_id=agent.pk, instance_id=instance.pk)

    assert (stopped.status, again.status) == ("stopped", "stopped")
    assert stopped.stopped_at is not None
    assert pool() == before
    assert [e.action for e in events_after(start)] == ["instance.stopped"]
    assert len(callbacks) == 1


def test_an_instance_is_stopped_only_through_its_own_agent(acme):
    first, second = make_agent("One"), make_agent("Two")
    instance = services.instance_request(actor=system(), agent_id=first.pk)

    with pytest.raises(AgentInstance.DoesNotExist):
        services.instance_stop(actor=system(), agent_id=second.pk, instance_id=instance.pk)

    assert AgentInstance.objects.get(pk=instance.pk).status == "pending"


@pytest.mark.parametrize(
    ("overrides", "agent_fields", "code", "limit_name"),
    [
        ({"max_instances": 2}, {}, "instance_limit_reached", "max_instances"),
        ({"max_cpu_millicores": 1200}, {"cpu": "500m"}, "insufficient_cpu", "max_cpu_millicores"),
        ({"max_memory_mb": 1100}, {"memory": "512MB"}, "insufficient_memory", "max_memory_mb"),
    ],
)
def test_each_limit_refuses_the_request_that_does_not_fit(
    acme, overrides, agent_fields, code, limit_name, django_capture_on_commit_callbacks
):
    agent = make_agent("Worker", **agent_fields)
    limit(acme, **overrides)
    services.instance_request(actor=system(), agent_id=agent.pk)
    services.instance_request(actor=system(), agent_id=agent.pk)
    before = snapshot()
    start = head()

    with django_capture_on_commit_callbacks() as callbacks, pytest.raises(QuotaExceeded) as caught:
        services.instance_request(actor=Actor.for_user(acme.member), agent_id=agent.pk)

    assert (caught.value.code, caught.value.limit) == (code, limit_name)
    assert snapshot() == before
    assert callbacks == []
    (refusal,) = events_after(start)
    assert (refusal.action, refusal.result, refusal.details["reason"]) == (
        "instance.requested",
        "denied",
        code,
    )


def test_messages_say_what_is_used_and_what_is_free(acme):
    agent = make_agent("Worker", cpu="750m")
    limit(acme, max_cpu_millicores=1000)
    services.instance_request(actor=system(), agent_id=agent.pk)

    with pytest.raises(QuotaExceeded) as caught:
        services.instance_request(actor=system(), agent_id=agent.pk)

    assert caught.value.message == "Not enough CPU: 750m requested, 250m free of 1."
    assert caught.value.detail == {
        "limit": "max_cpu_millicores",
        "allowed": 1000,
        "in_use": 750,
        "requested": 750,
    }


def test_the_agent_limit_refuses_new_agents(acme):
    in_use = pool()[0]
    limit(acme, max_agents=in_use + 1)
    make_agent("Last one")

    with pytest.raises(QuotaExceeded) as caught:
        make_agent("One too many")

    assert (caught.value.code, caught.value.limit) == ("agent_limit_reached", "max_agents")
    assert pool()[0] == in_use + 1


def test_lowering_limits_keeps_what_runs_but_refuses_new_instances_until_usage_fits(acme):
    agent = make_agent("Worker", cpu="1")
    running = [services.instance_request(actor=system(), agent_id=agent.pk) for _ in range(3)]

    limit(acme, max_cpu_millicores=1500, max_agents=0)

    assert all(
        AgentInstance.objects.get(pk=i.pk).status == "pending" for i in running
    )  # nothing was stopped
    with pytest.raises(QuotaExceeded) as agents:
        services.instance_request(actor=system(), agent_id=agent.pk)
    assert agents.value.code == "agent_limit_reached"

    limit(acme, max_agents=None)
    with pytest.raises(QuotaExceeded) as cpu:
        services.instance_request(actor=system(), agent_id=agent.pk)
    assert cpu.value.code == "insufficient_cpu"

    for instance in running[:3]:
        services.instance_stop(actor=system(), agent_id=agent.pk, instance_id=instance.pk)
    assert services.instance_request(actor=system(), agent_id=agent.pk).status == "pending"


def test_an_agent_larger_than_the_new_per_instance_maximum_cannot_start(acme):
    agent = make_agent("Wide", cpu="2")
    limit(acme, max_instance_cpu_millicores=1000)

    with pytest.raises(QuotaExceeded) as caught:
        services.instance_request(actor=system(), agent_id=agent.pk)

    assert (caught.value.code, caught.value.limit) == (
        "instance_too_large",
        "max_instance_cpu_millicores",
    )


def test_instances_keep_their_allocation_when_the_agent_changes(acme):
    agent = make_agent("Growing", cpu="500m")
    instance = services.instance_request(actor=system(), agent_id=agent.pk)
    services.agent_update(actor=system(), agent_id=agent.pk, cpu="1")
    before = pool()

    services.instance_stop(actor=system(), agent_id=agent.pk, instance_id=instance.pk)

    assert pool() == (before[0], before[1] - 1, before[2] - 500, before[3] - 512)


def test_a_runtime_reports_running_heartbeats_and_the_end(acme):
    agent = make_agent("Live")
    before = pool()
    instance = services.instance_request(actor=system(), agent_id=agent.pk)
    start = head()

    running = services.instance_report(actor=system(), instance_id=instance.pk, status="running")
    beat = services.instance_report(actor=system(), instance_id=instance.pk, status="running")
    stopping = services.instance_stop(actor=system(), agent_id=agent.pk, instance_id=instance.pk)
    stopped = services.instance_report(actor=system(), instance_id=instance.pk, status="stopped")

    assert running.started_at is not None and beat.last_heartbeat_at >= running.last_heartbeat_at
    assert (stopping.status, stopped.status) == ("stopping", "stopped")
    assert pool() == before
    assert [e.action for e in events_after(start)] == [
        "instance.running",
        "instance.stopped",
        "instance.stopped",
    ]
    with pytest.raises(ValidationError) as caught:
        services.instance_report(actor=system(), instance_id=instance.pk, status="running")
    assert field_errors(caught) == {"status": ["invalid_transition"]}


def test_a_failed_instance_returns_its_resources(acme):
    agent = make_agent("Fragile")
    before = pool()
    instance = services.instance_request(actor=system(), agent_id=agent.pk)

    failed = services.instance_report(actor=system(), instance_id=instance.pk, status="failed")

    assert (failed.status, pool()) == ("failed", before)


# --- Roles: refusals change nothing and emit nothing -----------------------------------------


def _writes(agent, instance):
    return {
        "agent_create": lambda actor: services.agent_create(
            actor=actor, name="New", type="worker", cpu="1", memory="1GB"
        ),
        "agent_update": lambda actor: services.agent_update(
            actor=actor, agent_id=agent.pk, name="Renamed"
        ),
        "agent_delete": lambda actor: services.agent_delete(actor=actor, agent_id=agent.pk),
        "instance_request": lambda actor: services.instance_request(actor=actor, agent_id=agent.pk),
        "instance_stop": lambda actor: services.instance_stop(
            actor=actor, agent_id=agent.pk, instance_id=instance.pk
        ),
        "config_set": lambda actor: services.config_set(
            actor=actor, key="agents.defaults", value={"x": 1}
        ),
    }


# Which roles may call each write (viewers read; members write agents; admins write config).
ALLOWED = {
    "agent_create": {"member", "admin", "owner"},
    "agent_update": {"member", "admin", "owner"},
    "agent_delete": {"member", "admin", "owner"},
    "instance_request": {"member", "admin", "owner"},
    "instance_stop": {"member", "admin", "owner"},
    "config_set": {"admin", "owner"},
}
# After-commit callbacks of each allowed write: one event each; deleting an agent also stops its
# instance (two events); a config write also drops the config cache (event and invalidation).
ON_COMMIT = {
    "agent_create": 1,
    "agent_update": 1,
    "agent_delete": 2,
    "instance_request": 1,
    "instance_stop": 1,
    "config_set": 2,
}


@pytest.mark.parametrize("write", sorted(ALLOWED))
@pytest.mark.parametrize("role", ["anonymous", "viewer", "member", "admin", "owner"])
def test_role_matrix(acme, role, write, django_capture_on_commit_callbacks):
    agent = make_agent("Target")
    instance = services.instance_request(actor=system(), agent_id=agent.pk)
    actor = Actor.anonymous() if role == "anonymous" else Actor.for_user(acme.user(role))
    call = _writes(agent, instance)[write]
    before = snapshot()
    start = head()

    with django_capture_on_commit_callbacks() as callbacks:
        if role in ALLOWED[write]:
            call(actor)
        else:
            with pytest.raises(PermissionDenied):
                call(actor)

    if role in ALLOWED[write]:
        assert snapshot() != before
        assert len(callbacks) == ON_COMMIT[write]
    else:
        assert snapshot() == before
        assert callbacks == []
        (refusal,) = events_after(start)
        assert refusal.result == "denied"


def test_a_deactivated_member_can_do_nothing(acme):
    from accounts.models import User

    member = User.objects.get(pk=acme.member.pk)
    member.is_active = False
    before = snapshot()

    with pytest.raises(PermissionDenied):
        services.agent_create(
            actor=Actor.for_user(member), name="x", type="worker", cpu="1", memory="1GB"
        )

    assert snapshot() == before


# --- Config ----------------------------------------------------------------------------------


def test_config_writes_take_growing_versions_and_announce_key_value_version(
    acme, listen, django_capture_on_commit_callbacks
):
    receive = listen(acme.tenant, "config.changed")
    admin = Actor.for_user(acme.admin)

    with django_capture_on_commit_callbacks(execute=True):
        first = services.config_set(actor=admin, key="agents.defaults", value={"model": "small"})
    with django_capture_on_commit_callbacks(execute=True):
        second = services.config_set(actor=admin, key="agents.worker", value={"timeout": 30})
    with django_capture_on_commit_callbacks(execute=True):
        third = services.config_set(actor=admin, key="agents.defaults", value={"model": "large"})

    assert second.version == first.version + 1 and third.version == second.version + 1
    messages = [receive(), receive(), receive()]
    assert [m["data"] for m in messages] == [
        {"key": "agents.defaults", "value": {"model": "small"}, "version": first.version},
        {"key": "agents.worker", "value": {"timeout": 30}, "version": second.version},
        {"key": "agents.defaults", "value": {"model": "large"}, "version": third.version},
    ]
    assert {m["tenant"] for m in messages} == {str(acme.tenant.public_id)}
    assert ConfigKey.objects.get(key="agents.defaults").updated_by == acme.admin.email


def test_setting_the_same_value_again_changes_nothing(acme, django_capture_on_commit_callbacks):
    services.config_set(actor=system(), key="feature.beta", value=True)
    start = head()

    with django_capture_on_commit_callbacks() as callbacks:
        services.config_set(actor=system(), key="feature.beta", value=True)

    assert events_after(start) == [] and callbacks == []


def test_json_values_that_python_calls_equal_are_different_values(acme):
    first = services.config_set(actor=system(), key="feature.flag", value=True)

    second = services.config_set(actor=system(), key="feature.flag", value=1)
    third = services.config_set(actor=system(), key="feature.flag", value=1.0)

    assert [first.version + 1, first.version + 2] == [second.version, third.version]
    assert ConfigKey.objects.get(key="feature.flag").value == 1.0


def test_a_refused_write_with_a_huge_key_is_still_recorded(acme):
    with pytest.raises(PermissionDenied):
        services.config_set(actor=Actor.for_user(acme.viewer), key="k" * 5000, value=1)

    assert AuditEvent.objects.order_by("-sequence").first().resource_id == "k" * 128


def test_deleting_a_key_announces_a_null_value(acme, listen, django_capture_on_commit_callbacks):
    entry = services.config_set(actor=system(), key="feature.beta", value=True)
    receive = listen(acme.tenant, "config.changed")

    with django_capture_on_commit_callbacks(execute=True):
        services.config_delete(actor=Actor.for_user(acme.owner), key="feature.beta")

    assert receive()["data"] == {"key": "feature.beta", "value": None, "version": entry.version + 1}
    assert not ConfigKey.objects.filter(key="feature.beta").exists()
    with pytest.raises(ConfigKey.DoesNotExist):
        services.config_delete(actor=system(), key="feature.beta")


def test_bad_config_changes_nothing(acme, django_capture_on_commit_callbacks):
    before = snapshot()

    with django_capture_on_commit_callbacks() as callbacks:
        for key, value in [
            ("Bad Key", 1),
            ("agents.worker", [1]),
            ("agents.worker.extra", {}),
            ("big.value", "x" * 70_000),
        ]:
            with pytest.raises(ValidationError):
                services.config_set(actor=system(), key=key, value=value)

    assert snapshot() == before and callbacks == []


def test_secret_looking_fields_never_reach_the_event(
    acme, listen, django_capture_on_commit_callbacks
):
    receive = listen(acme.tenant, "config.changed")

    with django_capture_on_commit_callbacks(execute=True):
        services.config_set(
            actor=system(), key="agents.defaults", value={"api_key": "sk-live", "model": "m"}
        )

    assert receive()["data"]["value"] == {"api_key": "[redacted]", "model": "m"}


# --- Event payloads --------------------------------------------------------------------------


def test_agent_and_instance_events_carry_their_payloads(
    acme, listen, django_capture_on_commit_callbacks
):
    tenant = acme.tenant
    heard = {
        subject: listen(tenant, subject)
        for subject in (
            "agent.created",
            "agent.updated",
            "agent.deleted",
            "instance.requested",
            "instance.stopped",
        )
    }

    with django_capture_on_commit_callbacks(execute=True):
        agent = make_agent(
            "Herald", type="router", cpu="0.5", memory="1GB", permissions=["messages:read"]
        )
    with django_capture_on_commit_callbacks(execute=True):
        services.agent_update(actor=system(), agent_id=agent.pk, description="Routes.")
    with django_capture_on_commit_callbacks(execute=True):
        instance = services.instance_request(actor=system(), agent_id=agent.pk)
    with django_capture_on_commit_callbacks(execute=True):
        services.instance_stop(actor=system(), agent_id=agent.pk, instance_id=instance.pk)
    with django_capture_on_commit_callbacks(execute=True):
        services.agent_delete(actor=system(), agent_id=agent.pk)

    described = {
        "id": str(agent.pk),
        "name": "Herald",
        "type": "router",
        "cpu": "500m",
        "memory": "1GB",
        "permissions": ["messages:read"],
        "tools": [],
    }
    running = {
        "id": str(instance.pk),
        "agent_id": str(agent.pk),
        "namespace": f"tenant.{tenant.public_id}.agents.{agent.pk}",
        "cpu": "500m",
        "memory": "1GB",
    }
    assert heard["agent.created"]()["data"] == described
    assert heard["agent.updated"]()["data"] == {**described, "changed": ["description"]}
    assert heard["instance.requested"]()["data"] == {**running, "status": "pending"}
    assert heard["instance.stopped"]()["data"] == {
        **running,
        "status": "stopped",
        "reason": "requested",
    }
    assert heard["agent.deleted"]()["data"] == {**described, "stopped_instances": 0}


def test_nothing_is_published_when_the_transaction_rolls_back(acme, listen):
    from django.db import transaction

    receive = listen(acme.tenant, "agent.created")

    class Abort(Exception):
        pass

    with pytest.raises(Abort), transaction.atomic():
        make_agent("Ghost")
        raise Abort

    with pytest.raises(TimeoutError):
        receive(timeout=0.3)
    assert not Agent.objects.filter(name="Ghost").exists()


# --- Staff ----------------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["owner", "admin"])
def test_only_staff_set_limits_and_platform_defaults(acme, role):
    actor = Actor.for_user(acme.user(role))

    with pytest.raises(PermissionDenied):
        services.organization_limits_set(
            actor=actor, tenant=acme.tenant, overrides={"max_agents": 1000}
        )
    with pytest.raises(PermissionDenied):
        services.platform_config_default_set(actor=actor, key="agents.defaults", value={})

    assert selectors.limits_get().max_agents == 25


def test_overrides_replace_the_plans_limits_and_none_restores_them(acme):
    limit(acme, max_agents=3, max_memory_mb=100)

    overridden = selectors.limits_get()
    limit(acme, max_agents=None, max_memory_mb=None)
    restored = selectors.limits_get()

    assert (overridden.max_agents, overridden.max_memory_mb, overridden.max_instances) == (
        3,
        100,
        50,
    )
    assert overridden.overridden == {"max_agents", "max_memory_mb"}
    assert (restored.max_agents, restored.max_memory_mb, restored.overridden) == (25, 65536, set())


def test_limit_overrides_are_checked(acme):
    with pytest.raises(ValidationError):
        limit(acme, max_agents=-1)
    with pytest.raises(ValidationError):
        limit(acme, max_wombats=1)

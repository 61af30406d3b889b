"""Staff admin: platform config defaults and per-organization limit overrides, through services."""

from __future__ import annotations

import pytest

from agents import selectors
from audit.models import AuditEvent
from tenants import context
from tenants.models import Domain, PlatformConfigDefault, Tenant


@pytest.fixture
def staff_client(public_client, staff_user):
    with context.public_context():
        public_client.force_login(staff_user)
    return public_client


def public_events(action: str) -> list[AuditEvent]:
    with context.public_context():
        return list(AuditEvent.objects.filter(action=action).order_by("sequence"))


def test_staff_add_a_platform_default(staff_client, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as callbacks:
        response = staff_client.post(
            "/admin/tenants/platformconfigdefault/add/",
            {"key": "agents.worker", "value": '{"timeout": 30}'},
        )

    assert response.status_code == 302
    with context.public_context():
        entry = PlatformConfigDefault.objects.get(key="agents.worker")
    assert (entry.value, entry.updated_by) == ({"timeout": 30}, "staff@platform.test")
    (event,) = public_events("platform_config.changed")
    assert event.details == {"key": "agents.worker", "bytes": 14, "created": True}
    assert len(callbacks) == 1  # the cache invalidation, after commit


@pytest.mark.parametrize(
    ("key", "value", "field"),
    [
        ("Agents.Worker", '{"a": 1}', "key"),
        ("agents.worker", "[1, 2]", "value"),
        ("agents.worker.deep", '{"a": 1}', "key"),
        ("big.value", '"' + "x" * 70_000 + '"', "value"),
    ],
)
def test_bad_platform_defaults_are_refused_in_place(staff_client, key, value, field):
    response = staff_client.post(
        "/admin/tenants/platformconfigdefault/add/", {"key": key, "value": value}
    )

    assert response.status_code == 200
    assert field in response.context["adminform"].form.errors
    with context.public_context():
        assert not PlatformConfigDefault.objects.exists()


def test_staff_override_an_organizations_limits_on_its_page(staff_client, org, in_tenant):
    with context.public_context():
        domain = Domain.objects.get(tenant=org.tenant)
    form = {
        "name": org.tenant.name,
        "plan": org.tenant.plan_id,
        "region": org.tenant.region,
        "residency_policy": org.tenant.residency_policy,
        "max_agents_override": "2",
        "max_instances_override": "",
        "max_cpu_millicores_override": "1500",
        "max_memory_mb_override": "",
        "max_instance_cpu_millicores_override": "",
        "max_instance_memory_mb_override": "",
        "messages_per_month_override": "",
        "domains-TOTAL_FORMS": "1",
        "domains-INITIAL_FORMS": "1",
        "domains-MIN_NUM_FORMS": "0",
        "domains-MAX_NUM_FORMS": "1000",
        "domains-0-id": str(domain.pk),
        "domains-0-tenant": str(org.tenant.pk),
    }

    response = staff_client.post(f"/admin/tenants/tenant/{org.tenant.pk}/change/", form)

    assert response.status_code == 302, response.context["adminform"].form.errors
    with in_tenant(org):
        limits = selectors.limits_get()
        own_log = list(AuditEvent.objects.filter(action="organization.limits_changed"))
    assert (limits.max_agents, limits.max_cpu_millicores, limits.max_instances) == (2, 1500, 50)
    assert limits.overridden == {"max_agents", "max_cpu_millicores"}
    changes = {
        "max_agents": {"from": None, "to": 2},
        "max_cpu_millicores": {"from": None, "to": 1500},
    }
    assert [e.details for e in public_events("organization.limits_changed")] == [changes]
    assert [e.details for e in own_log] == [changes]  # the organization sees it in its log
    with context.public_context():
        assert Tenant.objects.get(pk=org.tenant.pk).max_agents_override == 2


def test_a_plans_allowed_agent_permissions_are_checked(staff_client):
    from django.core.exceptions import ValidationError

    from tenants.models import Plan

    with context.public_context():
        plan = Plan.objects.get(slug="free")
    plan.allowed_agent_permissions = ["messages:read", "root:everything"]

    with pytest.raises(ValidationError) as caught:
        plan.full_clean()

    assert "Unknown agent permissions: root:everything" in str(caught.value)


def test_the_admin_speaks_of_organizations_with_units_and_no_groups(staff_client, org):
    index = staff_client.get("/admin/").content.decode()
    change = staff_client.get(f"/admin/tenants/tenant/{org.tenant.pk}/change/").content.decode()

    assert "Organizations and plans" in index and ">Organizations<" in index
    assert ">Tenants<" not in index and "Groups" not in index
    assert staff_client.get("/admin/auth/group/").status_code == 404
    assert "CPU per instance (override)" in change
    assert "In millicores; 1000 = 1 vCPU. Empty: the plan" in change

"""Data residency: policies, the one placement check, its recorded refusals, and every caller."""

from __future__ import annotations

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command

from audit.models import AuditEvent
from core.actors import Actor
from core.errors import describe
from organizations import services
from tenants import context, residency
from tenants.models import Tenant
from tests.conftest import PASSWORD

SYSTEM = Actor.system("tests")
STAFF = Actor(kind="staff", id="1", label="staff@platform.test")


def refusals(tenant: Tenant | None = None) -> list[AuditEvent]:
    enter = context.tenant_context(tenant) if tenant is not None else context.public_context()
    with enter:
        return list(
            AuditEvent.objects.filter(action="residency.refused").order_by("sequence").all()
        )


def test_each_policy_allows_its_regions():
    assert residency.allowed_regions("eu") == ("eu-west-1", "eu-central-1", "eu-north-1")
    assert residency.allowed_regions("us") == ("us-east-1", "us-east-2", "us-west-1", "us-west-2")
    assert residency.allowed_regions("global") == tuple(settings.REGIONS)
    with pytest.raises(KeyError):
        residency.allowed_regions("mars")


def test_every_policy_region_is_a_region_the_platform_offers():
    for regions in residency.POLICY_REGIONS.values():
        assert set(regions or ()) <= set(settings.REGIONS)
    assert set(residency.POLICY_REGIONS) == set(residency.Policy.values)


def test_an_allowed_placement_passes_and_records_nothing(db):
    residency.check_placement(
        actor=SYSTEM, region="eu-north-1", policy="eu", purpose=residency.Purpose.SIGNUP
    )
    residency.check_placement(
        actor=SYSTEM, region="ap-southeast-1", policy="global", purpose=residency.Purpose.SHARD
    )

    assert refusals() == []


@pytest.mark.parametrize(
    ("policy", "region", "rule", "message"),
    [
        (
            "eu",
            "us-east-1",
            "policy_regions",
            "Refused by the residency policy “eu”: data may live only in "
            "eu-west-1, eu-central-1, eu-north-1, not in us-east-1.",
        ),
        (
            "us",
            "eu-west-1",
            "policy_regions",
            "Refused by the residency policy “us”: data may live only in "
            "us-east-1, us-east-2, us-west-1, us-west-2, not in eu-west-1.",
        ),
        ("global", "mars-north-1", "region_unknown", "Unknown region “mars-north-1”."),
        ("eu", "mars-north-1", "region_unknown", "Unknown region “mars-north-1”."),
        ("moon", "eu-west-1", "policy_unknown", "Unknown residency policy “moon”."),
    ],
)
def test_every_rule_refuses_names_itself_and_is_recorded(db, policy, region, rule, message):
    with pytest.raises(residency.ResidencyViolation) as raised:
        residency.check_placement(
            actor=SYSTEM,
            region=region,
            policy=policy,
            purpose=residency.Purpose.SIGNUP,
            subject="initech",
        )

    error = raised.value
    assert error.rule == rule
    assert error.message.startswith(message)
    assert (error.code, error.status) == ("residency_violation", 403)
    (event,) = refusals()
    assert (event.result, event.tenant_id, event.resource_id) == ("denied", "platform", "initech")
    assert event.details["rule"] == rule
    assert event.details["policy"] == policy
    assert event.details["region"] == region
    assert event.details["purpose"] == "signup"
    assert event.details["subject"] == "initech"


def test_a_refusal_for_an_organization_goes_to_both_logs(org):
    with context.public_context():
        Tenant.objects.filter(pk=org.tenant.pk).update(residency_policy="eu", region="eu-west-1")
        tenant = Tenant.objects.get(pk=org.tenant.pk)

    with pytest.raises(residency.ResidencyViolation) as raised:
        residency.check_placement(
            actor=SYSTEM,
            tenant=tenant,
            region="us-west-2",
            purpose=residency.Purpose.SHARD,
            subject="shard-us-2",
        )

    assert raised.value.detail == {
        "rule": "policy_regions",
        "policy": "eu",
        "region": "us-west-2",
        "purpose": "shard",
        "allowed_regions": ["eu-west-1", "eu-central-1", "eu-north-1"],
    }
    (platform,) = refusals()
    (own,) = refusals(tenant)
    for event in (platform, own):
        assert (event.resource_id, event.result) == (str(tenant.public_id), "denied")
        assert event.details["subject"] == "shard-us-2"
    # The other organization's log has nothing of it.
    assert residency.organization_regions(tenant) == ("eu-west-1", "eu-central-1", "eu-north-1")


def test_the_error_has_the_api_shape():
    problem = describe(
        residency.violation(policy="us", region="eu-central-1", purpose=residency.Purpose.EXPORT)
    )

    assert (problem.status, problem.code) == (403, "residency_violation")
    assert problem.detail["rule"] == "policy_regions"
    assert problem.detail["allowed_regions"] == ["us-east-1", "us-east-2", "us-west-1", "us-west-2"]


def test_check_needs_a_policy_or_an_organization():
    with pytest.raises(ValueError):
        residency.check_placement(actor=SYSTEM, region="eu-west-1", purpose="signup")


# --- Signup and provisioning ---------------------------------------------------------------------


def provision(**overrides) -> Tenant:
    arguments = dict(
        actor=SYSTEM,
        slug="initech",
        name="Initech",
        owner_email="owner@initech.test",
        owner_password=PASSWORD,
        region="eu-north-1",
        residency_policy="eu",
        plan_slug="team",
    )
    arguments.update(overrides)
    return services.provision_tenant(**arguments)


def test_provisioning_stores_the_home_region_and_policy(db):
    tenant = provision()

    with context.public_context():
        stored = Tenant.objects.get(pk=tenant.pk)
    assert (stored.region, stored.residency_policy) == ("eu-north-1", "eu")
    created = AuditEvent.objects.get(
        action="organization.created", resource_id=str(tenant.public_id)
    )
    assert created.details["residency_policy"] == "eu"


def test_provisioning_defaults_to_the_global_policy(db):
    tenant = provision(residency_policy=residency.DEFAULT_POLICY, region="ap-southeast-1")

    assert (tenant.region, tenant.residency_policy) == ("ap-southeast-1", "global")


def test_provisioning_outside_the_policy_is_refused_and_creates_nothing(db):
    before = Tenant.objects.count()

    with pytest.raises(residency.ResidencyViolation) as raised:
        provision(region="us-east-1")

    assert raised.value.rule == "policy_regions"
    assert Tenant.objects.count() == before
    assert not Tenant.objects.filter(slug="initech").exists()
    (event,) = refusals()
    assert (event.actor_kind, event.details["purpose"]) == ("system", "signup")


def test_an_unknown_policy_is_a_field_error(db):
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError) as raised:
        provision(residency_policy="moon")

    assert "residency_policy" in raised.value.message_dict


def test_provision_command_refuses_outside_the_policy(db):
    with pytest.raises(CommandError) as raised:
        call_command(
            "provision_tenant",
            "--slug",
            "hooli",
            "--name",
            "Hooli",
            "--owner-email",
            "owner@hooli.test",
            "--owner-password",
            PASSWORD,
            "--region",
            "us-east-1",
            "--residency-policy",
            "eu",
        )

    assert "Refused by the residency policy “eu”" in str(raised.value)
    assert not Tenant.objects.filter(slug="hooli").exists()
    assert len(refusals()) == 1


def test_signup_outside_the_policy_shows_the_rule_in_place(db, public_client):
    response = public_client.post(
        "/signup/",
        {
            "name": "Initech Labs",
            "slug": "initech",
            "region": "us-west-2",
            "residency_policy": "eu",
            "owner_email": "peter@initech.test",
            "password": PASSWORD,
            "password_confirm": PASSWORD,
        },
    )

    assert response.status_code == 400
    assert response.context["form"].errors["region"] == [
        "Refused by the residency policy “eu”: data may live only in "
        "eu-west-1, eu-central-1, eu-north-1, not in us-west-2."
    ]
    with context.public_context():
        assert not Tenant.objects.filter(slug="initech").exists()
    (event,) = refusals()
    assert event.actor_kind == "anonymous"


def test_signup_offers_the_policies(db, public_client):
    response = public_client.get("/signup/")

    choices = response.context["form"].fields["residency_policy"].choices
    assert [value for value, _ in choices] == ["eu", "us", "global"]
    assert 'name="residency_policy"' in response.text


# --- Changing the home region or the policy (staff) ----------------------------------------------


def test_staff_change_the_policy_within_its_rule(org):
    tenant = services.tenant_residency_set(
        actor=STAFF, tenant=org.tenant, region="eu-central-1", residency_policy="eu"
    )

    assert (tenant.region, tenant.residency_policy) == ("eu-central-1", "eu")
    with context.public_context():
        (platform,) = AuditEvent.objects.filter(action="organization.residency_changed")
    with context.tenant_context(tenant):
        (own,) = AuditEvent.objects.filter(action="organization.residency_changed")
    assert own.details == platform.details
    assert platform.details["residency_policy"] == {"from": "global", "to": "eu"}


def test_a_change_outside_the_policy_is_refused_and_changes_nothing(org):
    with context.public_context():
        before = Tenant.objects.values("region", "residency_policy").get(pk=org.tenant.pk)

    with pytest.raises(residency.ResidencyViolation):
        services.tenant_residency_set(
            actor=STAFF, tenant=org.tenant, region=before["region"], residency_policy="eu"
        )

    with context.public_context():
        after = Tenant.objects.values("region", "residency_policy").get(pk=org.tenant.pk)
    assert after == before
    assert len(refusals()) == 1
    assert len(refusals(org.tenant)) == 1
    with context.public_context():
        assert not AuditEvent.objects.filter(action="organization.residency_changed").exists()


def test_only_staff_change_residency(org):
    from django.core.exceptions import PermissionDenied

    owner = Actor.for_user(org.owner)
    with pytest.raises(PermissionDenied):
        services.tenant_residency_set(
            actor=owner, tenant=org.tenant, region="eu-west-1", residency_policy="eu"
        )
    with context.public_context():
        assert Tenant.objects.get(pk=org.tenant.pk).residency_policy == "global"


@pytest.fixture
def staff_client(public_client, staff_user):
    with context.public_context():
        public_client.force_login(staff_user)
    return public_client


def admin_form(tenant: Tenant, **changes) -> dict:
    data = {
        "name": tenant.name,
        "plan": tenant.plan_id,
        "region": tenant.region,
        "residency_policy": tenant.residency_policy,
        "domains-TOTAL_FORMS": "0",
        "domains-INITIAL_FORMS": "0",
        "domains-MIN_NUM_FORMS": "0",
        "domains-MAX_NUM_FORMS": "1000",
    }
    data.update(changes)
    return data


def test_admin_refuses_a_region_outside_the_policy_in_place(org, staff_client):
    url = f"/admin/tenants/tenant/{org.tenant.pk}/change/"

    response = staff_client.post(url, admin_form(org.tenant, residency_policy="eu"))

    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert "Refused by the residency policy “eu”" in errors["region"][0]
    with context.public_context():
        assert Tenant.objects.get(pk=org.tenant.pk).residency_policy == "global"
    assert len(refusals()) == 1


def test_admin_changes_region_and_policy_through_the_service(org, staff_client):
    url = f"/admin/tenants/tenant/{org.tenant.pk}/change/"

    response = staff_client.post(
        url, admin_form(org.tenant, residency_policy="us", region="us-west-1")
    )

    assert response.status_code == 302
    with context.public_context():
        stored = Tenant.objects.get(pk=org.tenant.pk)
        assert (stored.region, stored.residency_policy) == ("us-west-1", "us")
        assert AuditEvent.objects.filter(action="organization.residency_changed").count() == 1

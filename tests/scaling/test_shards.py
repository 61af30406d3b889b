"""Two shards: provisioning places organizations by region, requests follow the map, and each
organization's data lives only on its shard."""

from __future__ import annotations

import io

import pytest
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from django.db import connection, connections

from accounts.models import User
from audit.models import AuditEvent
from core.actors import Actor
from organizations import services
from scaling.shards import shard_add
from tenants import context, guard, shards
from tenants.models import Shard, Tenant
from tests.agents.conftest import make_agent
from tests.conftest import PASSWORD
from tests.credentials.helpers import api_key, api_key_header
from tests.scaling.conftest import SHARD_B, SHARD_B_REGION, SHARDS, default_serves_only

pytestmark = pytest.mark.django_db(databases=SHARDS)
SYSTEM = Actor.system("tests")


def provision(slug: str, region: str, policy: str = "global") -> Tenant:
    return services.provision_tenant(
        actor=SYSTEM,
        slug=slug,
        name=slug.title(),
        owner_email=f"owner@{slug}.test",
        owner_password=PASSWORD,
        region=region,
        plan_slug="team",
        residency_policy=policy,
    )


def schemas_on(alias: str) -> set[str]:
    with context.public_context(shard=alias), connection.cursor() as cursor:
        cursor.execute("SELECT nspname FROM pg_namespace WHERE nspname LIKE 't\\_%%'")
        return {name for (name,) in cursor.fetchall()}


def test_a_new_organization_goes_to_a_shard_in_its_region(shard_b):
    eu = provision("eu-corp", SHARD_B_REGION)
    us = provision("us-corp", "us-east-1")

    assert (eu.shard, us.shard) == (SHARD_B, "default")
    assert "t_eu_corp" in schemas_on(SHARD_B) and "t_eu_corp" not in schemas_on("default")
    assert "t_us_corp" in schemas_on("default") and "t_us_corp" not in schemas_on(SHARD_B)
    with context.tenant_context(eu):
        assert connection.alias == SHARD_B
        assert context.database_schema() == "t_eu_corp"
        assert list(User.objects.values_list("email", flat=True)) == ["owner@eu-corp.test"]
        assert list(AuditEvent.objects.values_list("action", flat=True))[:1] == [
            "organization.created"
        ]
    # The directory (tenants, domains, the platform's log) stays on `default`.
    with context.public_context():
        assert connection.alias == "default"
        assert Tenant.objects.get(slug="eu-corp").shard == SHARD_B
        assert AuditEvent.objects.filter(
            action="organization.created", resource_id=str(eu.public_id)
        ).exists()


def test_an_eu_organization_without_a_home_region_shard_goes_to_another_eu_shard(shard_b):
    tenant = provision("dub-corp", "eu-west-1", policy="eu")

    assert tenant.shard == SHARD_B


@pytest.mark.django_db
def test_no_shard_in_the_allowed_regions_refuses_the_signup_and_creates_nothing(org, settings):
    default_serves_only(settings, "us-east-1")
    before = schemas_on("default")

    with pytest.raises(ValidationError) as refused:
        provision("dub-corp", "eu-west-1", policy="eu")  # `default` is in us-east-1

    message = refused.value.message_dict["region"][0]
    assert message.startswith("No database shard serves") and "eu-west-1" in message
    with context.public_context():
        assert not Tenant.objects.filter(slug="dub-corp").exists()
    assert schemas_on("default") == before


@pytest.mark.django_db
def test_provision_tenant_command_refuses_when_no_shard_is_allowed(org, settings):
    default_serves_only(settings, "us-east-1")
    with pytest.raises(CommandError, match="region: No database shard"):
        call_command(
            "provision_tenant",
            "--slug=dub-corp",
            "--name=Dub",
            "--owner-email=owner@dub.test",
            f"--owner-password={PASSWORD}",
            "--region=eu-west-1",
            "--residency-policy=eu",
        )


def test_requests_follow_the_map_and_stay_in_their_organization(org, shard_b, client_for):
    eu = provision("eu-corp", SHARD_B_REGION)
    with context.tenant_context(org.tenant):
        make_agent("Acme secret agent")
    with context.tenant_context(eu):
        eu_owner = User.objects.get()
        eu_agent = make_agent("EU agent")
    _, eu_key = api_key(eu, ["agents:read"], user=eu_owner)
    _, acme_key = api_key(org, ["agents:read"])
    eu_client = client_for(eu)
    acme_client = client_for(org)

    eu_list = eu_client.get("/api/v1/agents/", **api_key_header(eu_key))
    acme_list = acme_client.get("/api/v1/agents/", **api_key_header(acme_key))

    assert eu_list.status_code == 200
    assert [agent["name"] for agent in eu_list.json()["results"]] == ["EU agent"]
    assert [agent["name"] for agent in acme_list.json()["results"]] == ["Acme secret agent"]
    # Cross-tenant, both ways: another organization's key, and another organization's object.
    assert eu_client.get("/api/v1/agents/", **api_key_header(acme_key)).status_code == 401
    # Ids repeat across schemas: the same id on Acme's host is Acme's own agent or nothing.
    probe = acme_client.get(f"/api/v1/agents/{eu_agent.pk}/", **api_key_header(acme_key))
    assert probe.status_code == 404 or probe.json()["name"] == "Acme secret agent"
    assert b"EU agent" not in probe.content
    page = client_for(eu, eu_owner).get("/")
    assert page.status_code == 200 and b"Eu-Corp" in page.content


def test_the_guard_refuses_a_query_on_another_shard_than_the_context(org, shard_b):
    # The same schema name on another shard (what a stale copy after a move would be).
    with context.tenant_context(org.tenant), pytest.raises(guard.TenantContextLeak, match="shard"):
        wrapper = connections[SHARD_B]
        wrapper.set_schema(org.tenant.schema_name, include_public=False)
        with wrapper.cursor() as cursor:
            cursor.execute("SELECT 1")
    connections[SHARD_B].set_schema_to_public()


def test_a_new_shard_reaches_every_process_through_the_invalidation(shard_b):
    assert set(shards.all_shards()) == {"default", SHARD_B}
    with context.public_context():
        Shard.objects.filter(name=SHARD_B).update(weight=250)
    assert shards.all_shards()[SHARD_B].weight == 100  # cached

    shards.clear_everywhere()

    assert shards.all_shards()[SHARD_B].weight == 250


def test_shard_list_shows_each_shard_with_its_organizations(shard_b):
    provision("eu-corp", SHARD_B_REGION)
    out = io.StringIO()

    call_command("shard_list", stdout=out)

    lines = out.getvalue().splitlines()
    assert lines[0].split()[:5] == ["SHARD", "REGION", "WEIGHT", "ORGS", "SCHEMAS"]
    row = next(line.split() for line in lines if line.startswith(SHARD_B))
    assert row[1:4] == [SHARD_B_REGION, "100", "1"]
    assert int(row[4]) >= 1


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        ({"name": "default"}, "name"),
        ({"name": "Bad Name"}, "name"),
        ({"region": "mars-north-1"}, "region"),
        ({"weight": 0}, "weight"),
        ({"url": "mysql://h/db"}, "url"),
        ({"url": "postgres://postgres@127.0.0.1:1/nowhere"}, "url"),
    ],
)
def test_shard_add_refuses_bad_input_and_records_nothing(db, arguments, field):
    given = {
        "name": "shard_x",
        "url": "postgres://postgres@127.0.0.1:5432/x",
        "region": "us-east-1",
    }
    given.update(arguments)
    with context.public_context():
        events_before = AuditEvent.objects.count()

    with pytest.raises(ValidationError) as refused:
        shard_add(actor=SYSTEM, **given)

    assert field in refused.value.message_dict
    with context.public_context():
        assert not Shard.objects.exists()
        assert AuditEvent.objects.count() == events_before


def test_refill_schema_pool_fills_one_shards_pool(shard_b):
    out = io.StringIO()

    call_command("refill_schema_pool", f"--shard={SHARD_B}", "--size=1", stdout=out)

    assert out.getvalue().strip().endswith("1 ready")
    assert out.getvalue().startswith(f"{SHARD_B}: built ")
    with pytest.raises(CommandError, match="No shard “nowhere”"):
        call_command("refill_schema_pool", "--shard=nowhere")


@pytest.mark.django_db
def test_signup_without_an_allowed_shard_shows_the_refusal_on_region(org, public_client, settings):
    default_serves_only(settings, "us-east-1")
    form = {
        "name": "Dub Corp",
        "slug": "dub-corp",
        "region": "eu-west-1",
        "residency_policy": "eu",
        "owner_email": "owner@dub.test",
        "password": PASSWORD,
        "password_confirm": PASSWORD,
    }

    response = public_client.post("/signup/", form)

    assert response.status_code == 400
    assert list(response.context["form"].errors) == ["region"]
    assert "No database shard serves" in response.text
    with context.public_context():
        assert not Tenant.objects.filter(slug="dub-corp").exists()

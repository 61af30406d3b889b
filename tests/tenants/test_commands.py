"""The operator commands: provision_tenant, refill_schema_pool, demo_setup."""

import threading

import pytest
from django.core.management import CommandError, call_command

from agents.models import Agent
from autoscaler.models import ScalingPolicy
from tenants import context, schema_pool
from tenants.models import SpareSchema, Tenant
from tests.conftest import PASSWORD


def test_provision_tenant_prints_the_url(db, capsys):
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
        "--plan",
        "team",
        "--region",
        "eu-west-1",
    )

    assert capsys.readouterr().out.strip() == "http://hooli.localhost:8000/"
    tenant = Tenant.objects.get(slug="hooli")
    assert (tenant.plan.slug, tenant.region) == ("team", "eu-west-1")


def test_provision_tenant_explains_every_problem_and_creates_nothing(db):
    before = Tenant.objects.count()

    with pytest.raises(CommandError) as raised:
        call_command(
            "provision_tenant",
            "--slug",
            "Bad_Slug",
            "--name",
            "X",
            "--owner-email",
            "nope",
            "--owner-password",
            "123",
            "--region",
            "moon-1",
        )

    message = str(raised.value)
    assert message.startswith("Nothing was created.")
    for field in ("slug:", "owner_email:", "owner_password:", "region:"):
        assert field in message
    assert "123" not in message.replace("owner_password:", "")  # the password is not echoed
    assert Tenant.objects.count() == before


def test_demo_setup_is_idempotent(db, capsys):
    call_command("demo_setup")
    call_command("demo_setup")

    output = capsys.readouterr().out
    assert "http://acme.localhost:8000/" in output
    assert Tenant.objects.filter(slug="acme").count() == 1
    with context.tenant_context(Tenant.objects.get(slug="acme")):
        agents = {agent.name: agent for agent in Agent.objects.all()}
        assert sorted(agents) == ["Nightly summarizer", "Support triage"]
        policy = ScalingPolicy.objects.get()
        assert (policy.agent_id, policy.is_enabled, policy.max_instances) == (
            agents["Support triage"].pk,
            True,
            4,
        )


def test_background_refill_builds_the_pool_in_its_own_thread(
    django_db_setup, django_db_blocker, settings
):
    settings.SCHEMA_POOL_BACKGROUND_REFILL = True
    settings.SCHEMA_POOL_SIZE = 2
    before = set(threading.enumerate())
    with django_db_blocker.unblock():
        try:
            schema_pool.refill_in_background()
            for thread in set(threading.enumerate()) - before:
                thread.join(timeout=60)
            assert schema_pool.size() == 2
        finally:
            with context.public_context():
                for spare in SpareSchema.objects.all():
                    schema_pool.drop_schema(spare.schema_name)
                    spare.delete()


def test_refill_replaces_spares_built_with_other_migrations(db):
    schema_pool.refill(1)
    stale = SpareSchema.objects.get()
    SpareSchema.objects.filter(pk=stale.pk).update(fingerprint="old")

    schema_pool.refill(1)

    assert list(SpareSchema.objects.values_list("fingerprint", flat=True)) == [
        schema_pool.migrations_fingerprint()
    ]
    assert not SpareSchema.objects.filter(schema_name=stale.schema_name).exists()

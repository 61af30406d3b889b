"""Provisioning, suspension, reactivation and deletion of organizations."""

from unittest import mock

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import DatabaseError, connection

from accounts.models import User
from audit.models import AuditEvent
from core.actors import Actor
from organizations import services
from tenants import context, schema_pool
from tenants.models import Domain, Tenant, TenantStatus
from tests.conftest import PASSWORD

SYSTEM = Actor.system("tests")


def schemas() -> set[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT nspname FROM pg_namespace")
        return {row[0] for row in cursor.fetchall()}


def provision(**overrides) -> Tenant:
    arguments = dict(
        actor=SYSTEM,
        slug="initech",
        name="Initech",
        owner_email="Owner@Initech.test",
        owner_password=PASSWORD,
        region="eu-west-1",
        plan_slug="team",
    )
    arguments.update(overrides)
    return services.provision_tenant(**arguments)


def test_provision_creates_a_ready_organization(db):
    tenant = provision()

    assert (tenant.slug, tenant.name, tenant.region, tenant.plan.slug) == (
        "initech",
        "Initech",
        "eu-west-1",
        "team",
    )
    assert tenant.schema_name == "t_initech"
    assert tenant.url == "http://initech.localhost:8000/"
    assert list(Domain.objects.filter(tenant=tenant).values_list("domain", "is_primary")) == [
        ("initech.localhost", True)
    ]
    with context.tenant_context(tenant):
        owner = User.objects.get()
        assert (owner.email, owner.role, owner.is_active) == ("owner@initech.test", "owner", True)
        assert owner.check_password(PASSWORD)
        assert list(AuditEvent.objects.values_list("action", flat=True)) == [
            "organization.created",
            "member.created",
        ]
    platform_log = AuditEvent.objects.filter(resource_id=str(tenant.public_id))
    assert list(platform_log.values_list("action", "tenant_id")) == [
        ("organization.created", "platform")
    ]


def test_provision_fast_path_claims_a_spare_schema(db):
    schema_pool.refill(1)
    assert schema_pool.size() == 1

    tenant = provision(slug="fast-one")

    assert schema_pool.size() == 0
    assert tenant.schema_name in schemas()
    assert not {name for name in schemas() if name.startswith("spare_")}


def tables_of(schema_name: str) -> dict[str, list[tuple[str, str]]]:
    with connection.cursor() as cursor:
        cursor.execute(
            """SELECT table_name, column_name, data_type FROM information_schema.columns
               WHERE table_schema = %s ORDER BY table_name, ordinal_position""",
            [schema_name],
        )
        tables: dict[str, list[tuple[str, str]]] = {}
        for table, column, data_type in cursor.fetchall():
            tables.setdefault(table, []).append((column, data_type))
        cursor.execute(
            "SELECT indexname FROM pg_indexes WHERE schemaname = %s ORDER BY indexname",
            [schema_name],
        )
        tables["<indexes>"] = [(row[0], "") for row in cursor.fetchall()]
        cursor.execute(
            "SELECT app, name FROM "
            + connection.ops.quote_name(schema_name)
            + ".django_migrations ORDER BY app, name"
        )
        tables["<migrations>"] = cursor.fetchall()
    return tables


def test_fast_path_gives_the_same_tables_as_the_migrate_path(db):
    slow = provision(slug="slow-path")
    schema_pool.refill(1)
    fast = provision(slug="fast-path", owner_email="owner@fast.test")

    assert tables_of(fast.schema_name) == tables_of(slow.schema_name)
    assert "accounts_user" in tables_of(fast.schema_name)


@pytest.mark.parametrize(
    ("overrides", "field", "code"),
    [
        ({"slug": "ab"}, "slug", "invalid_slug"),
        ({"slug": "a" * 41}, "slug", "invalid_slug"),
        ({"slug": "-acme"}, "slug", "invalid_slug"),
        ({"slug": "acme-"}, "slug", "invalid_slug"),
        ({"slug": "Acme_Corp"}, "slug", "invalid_slug"),
        ({"slug": "ac me"}, "slug", "invalid_slug"),
        ({"slug": "ünicode"}, "slug", "invalid_slug"),
        ({"slug": "www"}, "slug", "reserved_slug"),
        ({"slug": "admin"}, "slug", "reserved_slug"),
        ({"slug": "api"}, "slug", "reserved_slug"),
        ({"slug": "public"}, "slug", "reserved_slug"),
        ({"slug": "static"}, "slug", "reserved_slug"),
        ({"slug": "ws"}, "slug", "invalid_slug"),  # too short, and reserved anyway
        ({"slug": "wss"}, "slug", "reserved_slug"),
        ({"slug": "acme"}, "slug", "slug_taken"),
        ({"name": "  "}, "name", "required"),
        ({"region": "mars-north-1"}, "region", "invalid_region"),
        ({"owner_email": "not-an-email"}, "owner_email", "invalid"),
        ({"owner_password": "short"}, "owner_password", "password_too_short"),
        ({"owner_password": "password123"}, "owner_password", "password_too_common"),
        ({"owner_password": "83749283749283"}, "owner_password", "password_entirely_numeric"),
        ({"plan_slug": "platinum"}, "plan", "invalid_plan"),
    ],
)
def test_provision_validates_first_and_changes_nothing(org, overrides, field, code):
    before = (Tenant.objects.count(), Domain.objects.count(), schemas())

    with pytest.raises(ValidationError) as raised:
        provision(**overrides)

    assert code in [error.code for error in raised.value.error_dict[field]]
    assert (Tenant.objects.count(), Domain.objects.count(), schemas()) == before


@pytest.mark.parametrize("fast_path", [True, False])
def test_a_failure_halfway_leaves_no_half_organization(db, fast_path):
    if fast_path:
        schema_pool.refill(1)
    before = (Tenant.objects.count(), schemas(), schema_pool.size())

    with (
        mock.patch.object(Domain.objects, "create", side_effect=DatabaseError("injected")),
        pytest.raises(DatabaseError, match="injected"),
    ):
        provision(slug="half-done")

    assert not Domain.objects.filter(domain__startswith="half-done.").exists()
    assert "t_half_done" not in schemas()
    # Nothing else changed either: on the fast path the spare is back in the pool, unrenamed.
    assert (Tenant.objects.count(), schemas(), schema_pool.size()) == before


def test_a_database_refusing_the_schema_leaves_nothing(db):
    before = (Tenant.objects.count(), schemas())

    with (
        mock.patch.object(schema_pool, "call_command", side_effect=DatabaseError("no schema")),
        pytest.raises(DatabaseError),
    ):
        provision(slug="refused")

    assert (Tenant.objects.count(), schemas()) == before


def test_only_staff_can_suspend_and_the_refusal_is_recorded(org):
    with pytest.raises(PermissionDenied):
        services.tenant_suspend(actor=Actor.for_user(org.owner), tenant=org.tenant, reason="tests")

    org.tenant.refresh_from_db()
    assert org.tenant.status == TenantStatus.ACTIVE
    event = AuditEvent.objects.order_by("-sequence").first()  # the platform's log
    assert (event.action, event.result, event.actor_label, event.resource_id) == (
        "organization.suspended",
        "denied",
        org.owner.email,
        str(org.tenant.public_id),
    )


def test_suspend_and_reactivate_record_in_both_logs(org, staff_user):
    actor = Actor.for_user(staff_user)

    services.tenant_suspend(actor=actor, tenant=org.tenant, reason="tests")
    assert Tenant.objects.get(pk=org.tenant.pk).status == TenantStatus.SUSPENDED
    services.tenant_reactivate(actor=actor, tenant=org.tenant)

    assert Tenant.objects.get(pk=org.tenant.pk).status == TenantStatus.ACTIVE
    platform_log = list(
        AuditEvent.objects.filter(resource_id=str(org.tenant.public_id))
        .order_by("sequence")
        .values_list("action", "actor_label")
    )
    assert platform_log[-2:] == [
        ("organization.suspended", "staff@platform.test"),
        ("organization.reactivated", "staff@platform.test"),
    ]
    with context.tenant_context(org.tenant):
        assert list(
            AuditEvent.objects.order_by("-sequence").values_list("action", flat=True)[:2]
        ) == ["organization.reactivated", "organization.suspended"]


def test_delete_drops_the_schema_and_frees_the_domain(db, staff_user):
    tenant = provision(slug="doomed")

    services.tenant_delete(actor=Actor.for_user(staff_user), tenant=tenant)

    assert not Tenant.objects.filter(slug="doomed").exists()
    assert not Domain.objects.filter(domain="doomed.localhost").exists()
    assert "t_doomed" not in schemas()
    assert (
        AuditEvent.objects.filter(
            action="organization.deleted", resource_id=str(tenant.public_id)
        ).count()
        == 1
    )
    # The slug is free again, and the new organization gets a new namespace id.
    again = provision(slug="doomed")
    assert again.public_id != tenant.public_id


def test_plan_change_by_staff_is_recorded(org, staff_user):
    from tenants.models import Plan

    enterprise = Plan.objects.get(slug="enterprise")

    services.tenant_update(
        actor=Actor.for_user(staff_user), tenant=org.tenant, name="Acme Inc", plan=enterprise
    )

    assert Tenant.objects.get(pk=org.tenant.pk).plan.slug == "enterprise"
    with context.tenant_context(org.tenant):
        event = AuditEvent.objects.order_by("-sequence").first()
    assert (event.action, event.details) == (
        "organization.updated",
        {"plan": {"from": "team", "to": "enterprise"}},
    )


@pytest.mark.parametrize("reason", ["", "   ", "x" * 501])
def test_suspending_needs_a_reason(org, staff_user, reason):
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError) as refused:
        services.tenant_suspend(actor=Actor.for_user(staff_user), tenant=org.tenant, reason=reason)
    assert "reason" in refused.value.message_dict
    org.tenant.refresh_from_db()
    assert org.tenant.status == TenantStatus.ACTIVE

"""The tenant context: it survives hops, and the guard catches a query in the wrong schema."""

import threading

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from django.db import connection

from accounts.models import User
from tenants import context
from tenants.guard import TenantContextLeak


def test_tenant_context_points_queries_at_the_schema(org, other_org):
    with context.tenant_context(org.tenant):
        assert context.database_schema() == org.tenant.schema_name
        assert User.objects.filter(email="owner@acme.test").exists()
        assert not User.objects.filter(email="owner@globex.test").exists()
    with context.tenant_context(other_org.tenant):
        assert context.database_schema() == other_org.tenant.schema_name
    assert context.database_schema() == "public"


def test_context_survives_sync_to_async_hops(org):
    def read_schema():
        return context.database_schema(), context.current_tenant()

    async def hop():
        return await sync_to_async(read_schema)()

    with context.tenant_context(org.tenant):
        schema, tenant = async_to_sync(hop)()
    assert schema == org.tenant.schema_name
    assert tenant.pk == org.tenant.pk


def test_guard_refuses_a_query_after_a_raw_schema_switch(org, other_org):
    with context.tenant_context(org.tenant):
        connection.set_tenant(other_org.tenant)  # what a leak looks like
        with pytest.raises(TenantContextLeak):
            User.objects.count()
        context.reapply()
        assert User.objects.filter(email="owner@acme.test").exists()


def test_a_thread_that_forgets_the_context_does_not_read_the_tenant(org):
    """A new thread starts in `public`: it cannot silently read the tenant it was spawned from."""
    seen = {}

    def work():
        try:
            seen["schema"] = context.database_schema()
            seen["owner_visible"] = User.objects.filter(email="owner@acme.test").exists()
        finally:
            connection.close()

    with context.tenant_context(org.tenant):
        thread = threading.Thread(target=work)
        thread.start()
        thread.join()
    assert seen == {"schema": "public", "owner_visible": False}


def test_tenant_tables_are_not_read_from_public_in_a_tenant_context(org):
    """search_path has no `public` in a tenant context: public tables are simply not there."""
    from tenants.models import Plan

    with context.tenant_context(org.tenant), pytest.raises(Exception, match="does not exist"):
        Plan.objects.count()


def test_each_tenant_visits_organizations_by_slug_inside_their_own_context(org, other_org):
    visited = [
        (tenant.slug, context.current_tenant().slug, context.database_schema())
        for tenant in context.each_tenant(statuses=["active"])
        if tenant.slug in {org.tenant.slug, other_org.tenant.slug}
    ]

    assert visited == sorted(
        (t.slug, t.slug, t.schema_name) for t in (org.tenant, other_org.tenant)
    )
    assert context.current_tenant() is None
    only = [
        tenant.slug for tenant in context.each_tenant(statuses=["active"], slug=org.tenant.slug)
    ]
    assert only == [org.tenant.slug]
    assert list(context.each_tenant(statuses=["suspended"], slug=org.tenant.slug)) == []


def test_require_tenant_refuses_outside_an_organization(org):
    with pytest.raises(context.OutsideOrganization):
        context.require_tenant()
    with context.tenant_context(org.tenant):
        assert context.require_tenant() == org.tenant

"""Routing: the host lookup is cached and the schema is set once, or not at all."""

from django.db import connection
from django.test.utils import CaptureQueriesContext, override_settings

from tenants import routing

PROBE = "tests.security.probe_urls"


def statements(queries, fragment: str) -> int:
    return sum(fragment in query["sql"] for query in queries)


@override_settings(ROOT_URLCONF=PROBE)
def test_a_warm_request_queries_no_domain_and_sets_no_schema(org, client_for):
    client = client_for(org)
    client.get("/probe/schema/")  # warms the routing cache and points the connection at acme

    with CaptureQueriesContext(connection) as queries:
        response = client.get("/probe/schema/")

    assert response.json()["schema"] == "t_acme"
    assert statements(queries, "tenants_domain") == 0
    assert statements(queries, "search_path") == 0


@override_settings(ROOT_URLCONF=PROBE)
def test_switching_tenants_sets_the_schema_once(org, other_org, client_for):
    client_for(org).get("/probe/schema/")
    client_for(other_org).get("/probe/schema/")  # warm both hosts

    with CaptureQueriesContext(connection) as queries:
        response = client_for(org).get("/probe/schema/")

    assert response.json()["schema"] == "t_acme"
    assert statements(queries, "search_path") == 1
    assert statements(queries, "tenants_domain") == 0


def test_a_cold_lookup_reads_the_domain_once_then_caches(org):
    routing.clear()
    with CaptureQueriesContext(connection) as queries:
        first = routing.lookup(org.host)
        second = routing.lookup(org.host)

    assert first.pk == second.pk == org.tenant.pk
    assert statements(queries, "tenants_domain") == 1
    assert first.plan.slug == "team"  # loaded with the tenant: no public query later


@override_settings(WHITENOISE_USE_FINDERS=True, WHITENOISE_AUTOREFRESH=True)
def test_a_suspended_organization_still_gets_the_portal_stylesheet(org, staff_user):
    """Its "organization suspended" page links /static/css/app.css: that must not be refused
    too (it was: the page rendered without styles). Static files belong to no organization."""
    from django.test import Client

    from core.actors import Actor
    from organizations import services

    services.tenant_suspend(actor=Actor.for_user(staff_user), tenant=org.tenant)
    client = Client(HTTP_HOST=org.tenant.host)

    page = client.get("/")
    stylesheet = client.get("/static/css/app.css")

    assert page.status_code == 403
    assert "/static/css/app.css" in page.content.decode()
    assert stylesheet.status_code == 200
    assert b"--primary" in b"".join(stylesheet.streaming_content)
    # The API stays refused as before.
    assert client.get("/api/v1/agents/").status_code == 403

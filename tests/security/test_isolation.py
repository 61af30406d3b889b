"""Cross-tenant probes at the HTTP layer: hosts, sessions, admin, headers, lifecycle."""

import subprocess
import textwrap

import pytest
from django.conf import settings
from django.test import Client, override_settings

from core.actors import Actor
from organizations import services
from tenants import context
from tenants.models import Tenant
from tests import live
from tests.conftest import PASSWORD

PROBE = "tests.security.probe_urls"


@override_settings(ROOT_URLCONF=PROBE)
def test_each_host_reads_only_its_own_schema(org, other_org, client_for):
    acme = client_for(org).get("/probe/schema/").json()
    globex = client_for(other_org).get("/probe/schema/").json()

    assert acme["schema"] == "t_acme" and acme["tenant"] == "acme"
    assert globex["schema"] == "t_globex" and globex["tenant"] == "globex"
    assert all(email.endswith("@acme.test") for email in acme["users"])
    assert all(email.endswith("@globex.test") for email in globex["users"])


@override_settings(ROOT_URLCONF=PROBE)
def test_a_tenant_named_in_headers_query_or_body_changes_nothing(org, client_for):
    client = client_for(org)
    response = client.get(
        "/probe/schema/?tenant=globex&schema=t_globex",
        HTTP_X_TENANT="globex",
        HTTP_X_FORWARDED_HOST="globex.localhost",
    )
    assert response.json()["schema"] == "t_acme"


@override_settings(ROOT_URLCONF=PROBE)
def test_the_connection_never_serves_the_previous_tenants_schema(org, other_org, client_for):
    """Same thread, same connection: acme fails mid-transaction, then globex asks."""
    assert client_for(org).get("/probe/fail/").status_code == 500

    after = client_for(other_org).get("/probe/schema/").json()

    assert after["schema"] == "t_globex"
    assert context.database_schema() == "t_globex"


def test_unknown_host_gets_not_found_and_bad_hosts_are_refused(db):
    page = Client(HTTP_HOST="nobody.localhost").get("/")
    api = Client(HTTP_HOST="nobody.localhost").get("/api/v1/agents/")
    evil = Client(HTTP_HOST="acme.evil.example").get("/")

    assert page.status_code == 404 and b"no organization" in page.content.lower()
    assert api.status_code == 404
    assert api.json()["error"]["code"] == "organization_not_found"
    assert evil.status_code == 400


def test_a_session_from_one_host_is_anonymous_on_another(org, other_org, client_for):
    acme_session = client_for(org, org.owner).cookies[settings.SESSION_COOKIE_NAME].value
    client = Client(HTTP_HOST=other_org.host)
    client.cookies[settings.SESSION_COOKIE_NAME] = acme_session

    response = client.get("/")

    assert response.status_code == 302
    assert response["Location"].startswith("/login/")


def test_session_cookie_is_host_only(org):
    client = Client(HTTP_HOST=org.host)
    client.post("/login/", {"username": org.owner.email, "password": PASSWORD})
    cookie = client.cookies[settings.SESSION_COOKIE_NAME]

    assert cookie.value
    assert cookie["domain"] == ""
    assert cookie["httponly"] is True


def test_tenant_hosts_do_not_serve_django_admin(org, client_for):
    assert client_for(org).get("/admin/").status_code == 404
    assert client_for(org, org.owner).get("/admin/login/").status_code == 404


def test_the_public_admin_refuses_tenant_users(org, public_client):
    response = public_client.post(
        "/admin/login/?next=/admin/", {"username": org.owner.email, "password": PASSWORD}
    )

    assert response.status_code == 200  # the login form again, with an error
    assert "_auth_user_id" not in public_client.session
    assert public_client.get("/admin/").status_code == 302


def test_staff_manage_organizations_in_admin(org, staff_user, public_client):
    public_client.force_login(staff_user)

    listing = public_client.get("/admin/tenants/tenant/?q=acme")
    filtered = public_client.get(f"/admin/tenants/tenant/?plan__id__exact={org.tenant.plan_id}")
    # Suspending asks for a reason and a confirmation first; the reason is in both logs.
    asked = public_client.post(
        "/admin/tenants/tenant/",
        {"action": "suspend", "_selected_action": [org.tenant.pk]},
    )
    unconfirmed = public_client.post(
        "/admin/tenants/tenant/",
        {"action": "suspend", "_selected_action": [org.tenant.pk], "apply": "1", "reason": "x"},
    )
    org.tenant.refresh_from_db()
    assert asked.status_code == unconfirmed.status_code == 200
    assert b"reason" in asked.content and org.tenant.status == "active"
    suspended = public_client.post(
        "/admin/tenants/tenant/",
        {
            "action": "suspend",
            "_selected_action": [org.tenant.pk],
            "apply": "1",
            "reason": "Unpaid invoices since  October",
            "confirm": "on",
        },
    )

    assert listing.status_code == 200 and b"Acme Inc" in listing.content
    assert b"Globex" not in listing.content
    assert filtered.status_code == 200
    assert suspended.status_code == 302
    org.tenant.refresh_from_db()
    assert org.tenant.status == "suspended"
    from audit.models import AuditEvent
    from tenants import context

    for enter in (context.public_context, lambda: context.tenant_context(org.tenant)):
        with enter():
            event = AuditEvent.objects.filter(action="organization.suspended").latest("sequence")
            assert event.details["reason"] == "Unpaid invoices since October"
            assert event.actor_label == staff_user.email


def test_suspension_refuses_an_open_session_at_its_next_request(
    org, client_for, staff_user, django_capture_on_commit_callbacks
):
    client = client_for(org, org.member)
    assert client.get("/").status_code == 200

    with django_capture_on_commit_callbacks(execute=True):
        services.tenant_suspend(actor=Actor.for_user(staff_user), tenant=org.tenant, reason="tests")
    page = client.get("/")
    api = client.get("/api/v1/agents/")

    assert page.status_code == 403 and b"suspended" in page.content.lower()
    assert api.status_code == 403
    assert api.json()["error"]["code"] == "organization_suspended"

    with django_capture_on_commit_callbacks(execute=True):
        services.tenant_reactivate(actor=Actor.for_user(staff_user), tenant=org.tenant)
    assert client.get("/").status_code == 200


def test_deletion_ends_an_open_session_at_once(
    db, client_for, staff_user, django_capture_on_commit_callbacks
):
    tenant = services.provision_tenant(
        actor=Actor.system(),
        slug="short-lived",
        name="Short Lived",
        owner_email="owner@short.test",
        owner_password=PASSWORD,
    )
    with context.tenant_context(tenant):
        from accounts.models import User

        owner = User.objects.get()
    client = client_for(tenant, owner)
    assert client.get("/").status_code == 200

    with django_capture_on_commit_callbacks(execute=True):
        services.tenant_delete(actor=Actor.for_user(staff_user), tenant=tenant)

    assert client.get("/").status_code == 404


ROUTING_PROBE = textwrap.dedent(
    """
    import sys
    import django
    django.setup()
    from tenants import routing
    host = sys.argv[1]
    for line in sys.stdin:
        tenant = routing.lookup(host)
        print(tenant.status if tenant else "gone", flush=True)
    """
)


def test_suspension_reaches_every_process_at_once(scratch_org, django_db_blocker):
    """Another process with a warm routing cache sees the suspension on its next lookup."""
    probe = live.python(ROUTING_PROBE, scratch_org.host)
    try:
        assert _ask(probe, "active") == "active"  # cached from now on
        with django_db_blocker.unblock():
            services.tenant_suspend(actor=Actor.system(), tenant=scratch_org.tenant, reason="tests")
        assert _ask(probe, "suspended") == "suspended"
        with django_db_blocker.unblock():
            services.tenant_reactivate(actor=Actor.system(), tenant=scratch_org.tenant)
        assert _ask(probe, "active") == "active"
    finally:
        live.stop(probe)


def _ask(probe: subprocess.Popen, expected: str) -> str:
    """The probe's answer once it is `expected`, or its last answer after 2 s.

    The invalidation travels through Redis pub/sub: it is allowed a moment, never seconds.
    """
    import time

    deadline = time.monotonic() + 2
    answer = ""
    while time.monotonic() < deadline:
        probe.stdin.write("\n")
        probe.stdin.flush()
        answer = probe.stdout.readline().strip()
        if answer == expected:
            break
        time.sleep(0.01)
    return answer


@pytest.mark.parametrize("path", ["/", "/members/", "/login/"])
def test_public_host_does_not_serve_tenant_pages(public_client, db, path):
    assert public_client.get(path).status_code in {404, 200}
    if path != "/":
        assert public_client.get(path).status_code == 404


def test_staff_cannot_bulk_delete_organizations_around_the_service(org, staff_user, public_client):
    public_client.force_login(staff_user)

    public_client.post(
        "/admin/tenants/tenant/",
        {"action": "delete_selected", "_selected_action": [org.tenant.pk], "post": "yes"},
    )

    assert Tenant.objects.filter(pk=org.tenant.pk).exists()

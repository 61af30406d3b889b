"""The portal shell: landing, "go to your organization", signup with its handoff, dashboard."""

import re

import pytest
from django.conf import settings
from django.db import connection
from django.test import Client

from accounts.models import User
from tenants import context
from tenants.models import Domain, Tenant
from tests.conftest import PASSWORD

GOOD_SIGNUP = {
    "name": "Initech Labs",
    "slug": "initech",
    "region": "eu-west-1",
    "full_name": "Peter  Gibbons",
    "owner_email": "Peter@Initech.test",
    "password": PASSWORD,
    "password_confirm": PASSWORD,
}


def schemas() -> set[str]:
    with context.public_context(), connection.cursor() as cursor:
        cursor.execute("SELECT nspname FROM pg_namespace")
        return {row[0] for row in cursor.fetchall()}


def world() -> tuple[int, int, set[str]]:
    with context.public_context():
        return Tenant.objects.count(), Domain.objects.count(), schemas()


# --- Landing and "go to your organization" -----------------------------------------------------


def test_the_landing_page_offers_signup_and_the_way_to_an_organization(public_client):
    response = public_client.get("/")

    assert response.status_code == 200
    assert 'href="/signup/"' in response.text
    assert 'action="/go/"' in response.text
    assert ".localhost:8000" in response.text


@pytest.mark.parametrize("typed", ["acme", " ACME "])
def test_go_sends_the_visitor_to_the_organizations_login(org, public_client, typed):
    response = public_client.get("/go/", {"slug": typed})

    assert (response.status_code, response["Location"]) == (
        302,
        "http://acme.localhost:8000/login/",
    )


@pytest.mark.parametrize(
    ("typed", "status", "error"),
    [
        ("nobody-here", 404, "There is no organization at this address."),
        ("-bad-", 400, "That is not a valid organization address."),
        ("", 400, "This field is required."),
    ],
)
def test_go_explains_a_wrong_address_in_place(db, public_client, typed, status, error):
    response = public_client.get("/go/", {"slug": typed})

    assert response.status_code == status
    assert response.context["jump_form"].errors["slug"] == [error]


# --- Signup ------------------------------------------------------------------------------------


def test_the_signup_page_offers_the_known_regions(db, public_client):
    response = public_client.get("/signup/")

    assert response.status_code == 200
    assert [value for value, _ in response.context["form"].fields["region"].choices] == list(
        settings.REGIONS
    )
    assert 'data-slug-from="id_name"' in response.text


@pytest.mark.parametrize(
    ("changes", "field", "error"),
    [
        ({"name": ""}, "name", "This field is required."),
        ({"slug": "ab"}, "slug", "Use 3-40 lowercase letters, digits and hyphens"),
        ({"slug": "admin"}, "slug", "is reserved. Pick another name."),
        ({"slug": "acme"}, "slug", "That name is taken."),
        ({"region": "mars-north-1"}, "region", "Select a valid choice."),
        ({"owner_email": "not-an-email"}, "owner_email", "Enter a valid email address."),
        ({"password": "short", "password_confirm": "short"}, "password", "too short"),
        (
            {"password": "password123", "password_confirm": "password123"},
            "password",
            "too common",
        ),
        ({"password_confirm": "something-else-entirely"}, "password_confirm", "do not match"),
    ],
)
def test_signup_shows_errors_in_place_and_creates_nothing(
    org, public_client, changes, field, error
):
    before = world()

    response = public_client.post("/signup/", {**GOOD_SIGNUP, **changes})

    assert response.status_code == 400
    errors = response.context["form"].errors
    assert list(errors) == [field]
    assert error in " ".join(errors[field])
    assert error.split("“")[0] in response.text.replace("&quot;", '"').replace("&#x27;", "'")
    assert world() == before
    assert "t_initech" not in world()[2]


def test_signup_shows_every_mistake_at_once(org, public_client):
    before = world()

    response = public_client.post(
        "/signup/",
        {**GOOD_SIGNUP, "slug": "acme", "owner_email": "hank@", "password": "short"},
    )

    assert response.status_code == 400
    errors = response.context["form"].errors
    assert errors["slug"] == ["That name is taken."]
    assert errors["owner_email"] == ["Enter a valid email address."]
    assert errors["password_confirm"] == ["The two passwords do not match."]
    assert (
        "This password is too short. It must contain at least 8 characters." in errors["password"]
    )
    assert world() == before


def test_signup_creates_the_organization_and_hands_the_owner_over(db, public_client):
    response = public_client.post("/signup/", GOOD_SIGNUP)

    assert response.status_code == 200
    assert response["Cache-Control"] == "no-store"
    with context.public_context():
        tenant = Tenant.objects.select_related("plan").get(slug="initech")
    assert (tenant.name, tenant.region, tenant.plan.slug) == ("Initech Labs", "eu-west-1", "free")
    assert tenant.schema_name in schemas()
    assert 'action="http://initech.localhost:8000/login/handoff/"' in response.text
    assert 'method="post"' in response.text
    token = re.search(r'name="token" value="([^"]+)"', response.text).group(1)

    owner = Client(HTTP_HOST="initech.localhost", enforce_csrf_checks=True)
    landed = owner.post("/login/handoff/", {"token": token})
    assert (landed.status_code, landed["Location"]) == (302, "/")
    dashboard = owner.get("/")
    assert dashboard.status_code == 200
    assert dashboard.context["user"].email == "peter@initech.test"
    assert dashboard.context["user"].role == "owner"
    assert dashboard.context["user"].full_name == "Peter Gibbons"  # asked at signup
    assert "Initech Labs" in dashboard.text
    # The token also worked only there, and only once.
    assert (
        Client(HTTP_HOST="initech.localhost").post("/login/handoff/", {"token": token}).status_code
        == 400
    )


def test_signup_leaves_no_session_on_the_public_host(db, public_client):
    public_client.post("/signup/", GOOD_SIGNUP)

    assert "sessionid" not in public_client.cookies


# --- Dashboard ---------------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["viewer", "member", "admin", "owner"])
def test_the_dashboard_shows_the_organization_to_every_role(org, client_for, role):
    response = client_for(org, org.user(role)).get("/")

    assert response.status_code == 200
    assert response.context["member_count"] == 4
    assert response.context["region_label"] == settings.REGIONS[org.tenant.region]
    assert (
        response.context["plan"].name,
        response.context["plan_price"],
    ) == ("Team", "$499 / month")
    assert dict(response.context["limits"])["Agents"] == "25"
    assert dict(response.context["limits"])["CPU"] == "32 vCPU"
    assert dict(response.context["limits"])["Memory"] == "64 GB"
    assert "Acme Inc" in response.text
    labels = [item["label"] for item in response.context["navigation"]]
    assert labels[:2] == ["Dashboard", "Members"]  # later sections add themselves after these
    can_invite = role in ("admin", "owner")
    assert (response.context["pending_invitation_count"] is not None) is can_invite
    assert ("Invite a member" in response.text) is can_invite


def test_the_dashboard_shows_limits_staff_overrode(org, client_for):
    from tenants.models import Tenant

    Tenant.objects.filter(pk=org.tenant.pk).update(max_agents_override=40)

    response = client_for(org, org.owner).get("/")

    assert dict(response.context["limits"])["Agents"] == "40"
    assert dict(response.context["limits"])["Running instances"] == "50"  # the plan's


def test_the_dashboard_counts_pending_invitations(org, client_for):
    client = client_for(org, org.owner)
    client.post("/members/invite/", {"email": "a@acme.test", "role": "member"})
    client.post("/members/invite/", {"email": "b@acme.test", "role": "viewer"})

    assert client.get("/").context["pending_invitation_count"] == 2


def test_the_dashboard_needs_a_login(org, client_for):
    response = client_for(org).get("/")

    assert (response.status_code, response["Location"]) == (302, "/login/?next=/")


def test_the_layout_has_the_user_menu_with_a_logout_form(org, client_for):
    response = client_for(org, org.admin).get("/")

    assert '<form method="post" action="/logout/">' in response.text
    assert "admin@acme.test" in response.text
    assert 'aria-current="page"' in response.text


# --- Error pages -------------------------------------------------------------------------------


def test_an_unknown_host_says_there_is_no_organization(db):
    response = Client(HTTP_HOST="nobody.localhost").get("/")

    assert response.status_code == 404
    assert "There is no organization at this address" in response.text


def test_an_unknown_page_uses_the_portals_404(org, client_for):
    response = client_for(org, org.member).get("/no-such-page/")

    assert response.status_code == 404
    assert "This page does not exist" in response.text
    assert "Acme Inc" in response.text


def test_a_forbidden_action_uses_the_portals_403(org, client_for):
    response = client_for(org, org.viewer).post("/members/invite/", {"email": "x@acme.test"})

    assert response.status_code == 403
    assert "You cannot do that here" in response.text


def test_a_missing_csrf_token_gets_a_clear_page(org):
    client = Client(HTTP_HOST=org.host, enforce_csrf_checks=True)

    response = client.post("/login/", {"username": "owner@acme.test", "password": PASSWORD})

    assert response.status_code == 403
    assert "Please try again" in response.text


def test_the_500_page_renders_without_a_request():
    from django.template.loader import render_to_string

    page = render_to_string("500.html")

    assert "Something went wrong on our side" in page
    assert "/static/css/app.css" in page


def test_the_public_host_does_not_serve_organization_pages(db, public_client):
    assert public_client.get("/members/").status_code == 404
    assert public_client.post("/login/handoff/", {"token": "x"}).status_code == 404


def test_users_of_the_public_schema_are_not_organization_users(org, client_for):
    with context.tenant_context(org.tenant):
        assert not User.objects.filter(email="staff@platform.test").exists()


def test_the_first_steps_tick_themselves_from_real_state(org, other_org, client_for, in_tenant):
    from agents import services as agent_services
    from audit.services import emit
    from core.actors import Actor
    from credentials import services as credential_services

    client = client_for(org, org.owner)

    def done() -> list[bool]:
        return [step.is_done for step in client.get("/").context["steps"]]

    assert done() == [False, False, False, False]
    owner = Actor.for_user(org.owner)
    with in_tenant(org):
        agent = agent_services.agent_create(
            actor=owner, name="Helper", type="worker", cpu="0.1", memory="64MB"
        )
    assert done() == [True, False, False, False]
    with in_tenant(org):
        credential_services.api_key_create(actor=owner, name="rt", scopes=["agents:read"])
        instance = agent_services.instance_request(actor=owner, agent_id=agent.pk)
    assert done() == [True, True, False, False]  # requested is not yet served
    with in_tenant(org):
        agent_services.instance_report(actor=owner, instance_id=instance.pk, status="running")
        emit(actor=owner, action="task.published", resource_type="task", resource_id="t1")
    assert done() == [True, True, True, True]
    page = client.get("/")
    assert page.context["steps_done"] == 4 and "First steps" not in page.text
    # Another organization's state ticks nothing here, and this one's nothing there.
    other = client_for(other_org, other_org.owner).get("/")
    assert [step.is_done for step in other.context["steps"]] == [False, False, False, False]


def test_recent_activity_speaks_in_words_to_audit_readers_only(org, client_for, in_tenant):
    from agents import services as agent_services
    from core.actors import Actor

    with in_tenant(org):
        agent = agent_services.agent_create(
            actor=Actor.for_user(org.admin), name="Speaker", type="worker", cpu="0.1", memory="64MB"
        )
        agent_services.config_set(
            actor=Actor.for_user(org.admin), key="agents.worker", value={"a": 1}
        )

    page = client_for(org, org.owner).get("/")
    lines = [(item.who, item.what, item.url) for item in page.context["activity"]][:2]
    assert lines == [
        (
            org.admin.email,
            "changed the config key agents.worker",
            "/config/history/?key=agents.worker",
        ),
        (org.admin.email, "created the agent “Speaker”", f"/agents/{agent.pk}/"),
    ]
    assert "created the agent “Speaker”" in page.text
    assert "UTC" in page.text
    member_page = client_for(org, org.member).get("/")
    assert member_page.context["activity"] is None
    assert "Speaker" not in member_page.text and "data-live-feed" in member_page.text

"""Staff support sessions: opened by staff with a reason, read-only, a banner for every member,
every request in both logs with the staff identity, ended by the owner or the clock."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.contrib import admin
from django.core.exceptions import PermissionDenied, ValidationError
from django.test import Client
from django.utils import timezone

from accounts.models import Invitation
from audit.models import AuditEvent
from core.actors import Actor
from organizations import services, support
from tenants import context, routing
from tenants.models import SupportSession

REASON = "Ticket 4711: the customer's agents do not start"


def open_session(org, staff_user, *, minutes: int = 60, reason: str = REASON) -> SupportSession:
    return support.support_session_open(
        actor=Actor.for_user(staff_user), tenant=org.tenant, reason=reason, minutes=minutes
    )


def support_client(org, session: SupportSession) -> Client:
    """A browser that redeemed the session's hand-off on the organization's host."""
    client = Client(HTTP_HOST=org.host)
    started = client.post("/support/start/", {"token": support.support_token_make(session=session)})
    assert (started.status_code, started["Location"]) == (302, "/")
    return client


def log(org=None, action: str = "") -> list[AuditEvent]:
    """The platform's log (org None) or the organization's, oldest first."""
    enter = context.public_context if org is None else lambda: context.tenant_context(org.tenant)
    with enter():
        events = AuditEvent.objects.order_by("sequence")
        return list(events.filter(action=action) if action else events)


def session_row(session: SupportSession) -> SupportSession:
    with context.public_context():
        return SupportSession.objects.get(pk=session.pk)


def both_logs(org, action: str) -> tuple[list[AuditEvent], list[AuditEvent]]:
    return log(None, action), log(org, action)


# --- Opening -------------------------------------------------------------------------------------


def test_staff_open_a_session_recorded_in_both_logs(org, staff_user):
    before = timezone.now()

    session = open_session(org, staff_user, minutes=30)

    row = session_row(session)
    assert (row.staff_id, row.staff_email, row.reason) == (staff_user.pk, staff_user.email, REASON)
    assert timedelta(minutes=30) == row.until - row.started_at
    assert before <= row.started_at <= timezone.now() and row.ended_at is None
    for events in both_logs(org, "support.session_opened"):
        (event,) = events
        assert (event.actor_kind, event.actor_id, event.actor_label) == (
            "staff",
            str(staff_user.pk),
            staff_user.email,
        )
        assert event.resource_id == str(session.pk)
        assert event.details == {
            "staff": staff_user.email,
            "reason": REASON,
            "until": row.until.isoformat(),
            "minutes": 30,
        }


@pytest.mark.parametrize("role", ["owner", "admin", "member", "viewer"])
def test_only_staff_open_a_session_and_a_refusal_is_recorded(org, role):
    actor = Actor.for_user(org.user(role))

    with pytest.raises(PermissionDenied):
        support.support_session_open(actor=actor, tenant=org.tenant, reason=REASON, minutes=60)

    with context.public_context():
        assert not SupportSession.objects.exists()
    (refused,) = log(None, "support.session_opened")
    assert (refused.result, refused.actor_label) == ("denied", org.user(role).email)
    assert log(org, "support.session_opened") == []


def test_the_system_cannot_open_a_session_only_a_person(org):
    with pytest.raises(PermissionDenied):
        support.support_session_open(
            actor=Actor.system("cron"), tenant=org.tenant, reason=REASON, minutes=60
        )
    with context.public_context():
        assert not SupportSession.objects.exists()


@pytest.mark.parametrize(
    ("reason", "minutes", "field"),
    [("", 60, "reason"), ("   ", 60, "reason"), ("x" * 501, 60, "reason"), (REASON, 5, "minutes")]
    + [(REASON, 241, "minutes"), (REASON, 0, "minutes")],
)
def test_a_session_needs_a_reason_and_a_bounded_duration(org, staff_user, reason, minutes, field):
    with pytest.raises(ValidationError) as refused:
        open_session(org, staff_user, reason=reason, minutes=minutes)

    assert list(refused.value.message_dict) == [field]
    with context.public_context():
        assert not SupportSession.objects.exists()
    assert both_logs(org, "support.session_opened") == ([], [])


def test_an_organization_requiring_two_factor_gets_no_session_from_staff_without_it(
    org, staff_user
):
    with context.public_context():
        type(org.tenant).objects.filter(pk=org.tenant.pk).update(require_two_factor=True)
        org.tenant.refresh_from_db()
    routing.clear()  # the hosts' routing cache holds the organization's row
    try:
        with pytest.raises(ValidationError, match="requires two-factor authentication"):
            open_session(org, staff_user)
        assert not SupportSession.objects.filter(tenant=org.tenant).exists()

        type(staff_user).objects.filter(pk=staff_user.pk).update(two_factor_enabled=True)
        staff_user.refresh_from_db()
        session = open_session(org, staff_user)
        assert support_client(org, session).get("/").status_code == 200
    finally:
        with context.public_context():
            type(org.tenant).objects.filter(pk=org.tenant.pk).update(require_two_factor=False)
            org.tenant.refresh_from_db()
        routing.clear()


def test_a_suspended_organization_gets_no_session(org, staff_user):
    services.tenant_suspend(actor=Actor.for_user(staff_user), tenant=org.tenant, reason="tests")

    with pytest.raises(ValidationError):
        open_session(org, staff_user)
    with context.public_context():
        assert not SupportSession.objects.exists()


# --- The hand-off and the banner -----------------------------------------------------------------


def test_the_handoff_enters_a_read_only_support_session_with_a_banner(org, staff_user):
    session = open_session(org, staff_user)
    client = support_client(org, session)

    page = client.get("/")

    assert page.status_code == 200
    user = page.context["user"]
    assert (user.is_support, user.email, user.pk) == (True, staff_user.email, None)
    text = page.content.decode()
    assert "Support session, read-only." in text
    assert f"<strong>{staff_user.email}</strong>" in text
    assert f"{session.until:%H:%M} UTC" in text and REASON.replace("'", "&#x27;") in text
    # Only the sections a viewer reads; no profile, no log out, no audit log.
    labels = [item["label"] for item in page.context["navigation"]]
    assert "Audit" not in labels and "API keys" not in labels and "Members" in labels
    assert 'action="/logout/"' not in text and "/profile/" not in text
    assert "data-support-session" in text  # live.js does not try the gateway, which refuses it
    (joined,) = log(org, "support.session_joined")
    assert (joined.actor_kind, joined.actor_label) == ("support", staff_user.email)


@pytest.mark.parametrize(
    ("role", "can_end"), [("owner", True), ("admin", False), ("member", False), ("viewer", False)]
)
def test_every_member_sees_the_banner_and_only_the_owner_can_end_it(
    org, staff_user, client_for, role, can_end
):
    session = open_session(org, staff_user)

    page = client_for(org, org.user(role)).get("/")

    text = page.content.decode()
    assert "Platform support has access." in text
    assert f"<strong>{staff_user.email}</strong> can read this organization until" in text
    assert f"{session.until:%Y-%m-%d %H:%M} UTC" in text
    assert (f'action="/support/{session.pk}/end/"' in text) is can_end
    assert "data-support-session" not in text


def test_no_banner_without_an_open_session(org, staff_user, client_for, other_org):
    open_session(other_org, staff_user)  # another organization's session

    page = client_for(org, org.owner).get("/")

    assert page.status_code == 200 and "support-banner" not in page.content.decode()


def test_the_banner_costs_no_query_once_cached(
    org, staff_user, client_for, django_assert_num_queries
):
    open_session(org, staff_user)
    client = client_for(org, org.viewer)
    client.get("/members/")  # warms the session, routing and banner caches

    # session, user, members, pending invitations: the banner comes from the cache.
    with django_assert_num_queries(3):
        page = client.get("/members/")
    assert "Platform support has access." in page.content.decode()


# --- Every request in both logs ------------------------------------------------------------------


def test_every_request_is_in_both_logs_with_the_staff_identity(org, staff_user):
    session = open_session(org, staff_user)
    client = support_client(org, session)

    pages = ["/", "/agents/", "/members/", "/no-such-page/"]
    statuses = [client.get(path).status_code for path in pages]

    assert statuses == [200, 200, 200, 404]
    for events in both_logs(org, "support.request"):
        assert [(e.details["method"], e.details["path"], e.details["status"]) for e in events] == [
            ("GET", path, status) for path, status in zip(pages, statuses, strict=True)
        ]
        assert {(e.actor_kind, e.actor_id, e.actor_label) for e in events} == {
            ("support", str(staff_user.pk), staff_user.email)
        }
        assert {e.resource_id for e in events} == {str(session.pk)}


def test_a_write_is_refused_recorded_and_changes_nothing(org, staff_user, in_tenant):
    client = support_client(org, open_session(org, staff_user))
    page = client.get("/members/")
    token = page.context["csrf_token"]

    refused = client.post(
        "/members/invite/",
        {"email": "mallory@example.test", "role": "admin"},
        HTTP_X_CSRFTOKEN=token,
    )

    assert refused.status_code == 403 and b"support session" in refused.content
    with in_tenant(org):
        assert not Invitation.objects.exists()
        assert not AuditEvent.objects.filter(action__startswith="invitation.").exists()
    for events in both_logs(org, "support.request"):
        assert (events[-1].details["method"], events[-1].details["refused"]) == ("POST", True)
        assert events[-1].details["status"] == 403


def test_the_api_is_closed_to_a_support_session(org, staff_user):
    client = support_client(org, open_session(org, staff_user))

    response = client.get("/api/v1/agents/")

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "support_session"


# --- Ending --------------------------------------------------------------------------------------


def test_the_owner_ends_it_at_once_and_the_next_request_is_refused(org, staff_user, client_for):
    session = open_session(org, staff_user)
    staff_browser = support_client(org, session)
    assert staff_browser.get("/").status_code == 200
    owner = client_for(org, org.owner)

    ended = owner.post(f"/support/{session.pk}/end/")

    assert (ended.status_code, ended["Location"]) == (302, "/")
    row = session_row(session)
    assert row.ended_at is not None and row.ended_by == org.owner.email
    for events in both_logs(org, "support.session_ended"):
        (event,) = events
        assert (event.actor_kind, event.actor_label) == ("user", org.owner.email)
        assert event.details["ended_by"] == org.owner.email
    refused = staff_browser.get("/agents/")
    assert (refused.status_code, refused["Location"]) == (302, "/login/")
    assert support.SESSION_KEY not in staff_browser.session
    assert staff_browser.get("/").status_code == 302  # signed out for good
    assert "support-banner" not in owner.get("/").content.decode()


@pytest.mark.parametrize("role", ["admin", "member", "viewer"])
def test_no_one_but_the_owner_ends_it(org, staff_user, client_for, role):
    session = open_session(org, staff_user)

    response = client_for(org, org.user(role)).post(f"/support/{session.pk}/end/")

    assert response.status_code == 403
    assert session_row(session).ended_at is None
    assert log(None, "support.session_ended") == []
    (refused,) = log(org, "support.session_ended")
    assert (refused.result, refused.actor_label) == ("denied", org.user(role).email)


def test_another_organizations_owner_gets_a_404(org, other_org, staff_user, client_for):
    session = open_session(org, staff_user)

    response = client_for(other_org, other_org.owner).post(f"/support/{session.pk}/end/")

    assert response.status_code == 404
    assert session_row(session).ended_at is None
    assert both_logs(org, "support.session_ended") == ([], [])


def test_an_anonymous_visitor_cannot_end_it(org, staff_user):
    session = open_session(org, staff_user)

    response = Client(HTTP_HOST=org.host).post(f"/support/{session.pk}/end/")

    assert response.status_code == 302 and response["Location"].startswith("/login/")
    assert session_row(session).ended_at is None


def test_the_staff_member_ends_their_own_session(org, staff_user):
    session = open_session(org, staff_user)
    client = support_client(org, session)
    token = client.get("/").context["csrf_token"]

    ended = client.post(f"/support/{session.pk}/end/", HTTP_X_CSRFTOKEN=token)

    assert (ended.status_code, ended["Location"]) == (302, "/login/")
    assert session_row(session).ended_by == staff_user.email
    (event,) = log(org, "support.session_ended")
    assert (event.actor_kind, event.actor_label) == ("support", staff_user.email)
    assert client.get("/").status_code == 302


def test_a_support_session_cannot_end_another_one(org, staff_user):
    mine, theirs = open_session(org, staff_user), open_session(org, staff_user)
    client = support_client(org, mine)
    token = client.get("/").context["csrf_token"]

    response = client.post(f"/support/{theirs.pk}/end/", HTTP_X_CSRFTOKEN=token)

    assert response.status_code == 403
    assert session_row(theirs).ended_at is None


def test_expiry_signs_the_staff_member_out_and_drops_the_banner(
    org, staff_user, client_for, monkeypatch
):
    session = open_session(org, staff_user, minutes=15)
    client = support_client(org, session)
    owner = client_for(org, org.owner)
    assert client.get("/").status_code == 200
    assert "support-banner" in owner.get("/").content.decode()  # now cached, with `until`
    assert client.session.get_expiry_date() == session.until  # the cookie ends with it too
    later = session.until + timedelta(seconds=1)
    monkeypatch.setattr(
        support, "timezone", type("Clock", (), {"now": staticmethod(lambda: later)})
    )

    refused = client.get("/")
    api = client.get("/api/v1/agents/")

    assert (refused.status_code, refused["Location"]) == (302, "/login/")
    assert api.status_code == 401
    assert "support-banner" not in owner.get("/").content.decode()
    # Ending an expired session changes nothing and records nothing.
    over = support.support_session_end(
        actor=Actor.for_user(org.owner), tenant=org.tenant, session_id=session.pk
    )
    assert over.ended_at is None and log(org, "support.session_ended") == []


def test_a_deactivated_staff_account_loses_its_session(org, staff_user):
    client = support_client(org, open_session(org, staff_user))
    with context.public_context():
        staff_user.is_active = False
        staff_user.save(update_fields=["is_active"])

    assert client.get("/").status_code == 302


# --- The hand-off token --------------------------------------------------------------------------


def test_a_token_works_once(org, staff_user):
    session = open_session(org, staff_user)
    token = support.support_token_make(session=session)
    first = Client(HTTP_HOST=org.host).post("/support/start/", {"token": token})

    again = Client(HTTP_HOST=org.host).post("/support/start/", {"token": token})

    assert first.status_code == 302 and again.status_code == 400
    assert len(log(org, "support.session_joined")) == 1


def test_a_token_is_refused_on_another_organizations_host(org, other_org, staff_user):
    token = support.support_token_make(session=open_session(org, staff_user))
    browser = Client(HTTP_HOST=other_org.host)

    response = browser.post("/support/start/", {"token": token})

    assert response.status_code == 400
    assert support.SESSION_KEY not in browser.session
    assert log(other_org, "support.session_joined") == log(org, "support.session_joined") == []


def test_a_signin_handoff_token_is_no_support_token_and_back(org, staff_user):
    from accounts.handoff import handoff_token_make

    session = open_session(org, staff_user)
    signin = handoff_token_make(tenant=org.tenant, user_id=session.pk)
    support_token = support.support_token_make(session=session)

    as_support = Client(HTTP_HOST=org.host).post("/support/start/", {"token": signin})
    as_signin = Client(HTTP_HOST=org.host).post("/login/handoff/", {"token": support_token})

    assert as_support.status_code == as_signin.status_code == 400


def test_a_token_for_an_ended_session_is_refused(org, staff_user):
    session = open_session(org, staff_user)
    token = support.support_token_make(session=session)
    support.support_session_end(
        actor=Actor.for_user(org.owner), tenant=org.tenant, session_id=session.pk
    )

    assert Client(HTTP_HOST=org.host).post("/support/start/", {"token": token}).status_code == 400


def test_the_handoff_signs_out_whoever_was_signed_in(org, staff_user, client_for):
    browser = client_for(org, org.owner)
    token = support.support_token_make(session=open_session(org, staff_user))

    browser.post("/support/start/", {"token": token})

    page = browser.get("/")
    assert page.context["user"].is_support and "_auth_user_id" not in browser.session


# --- Isolation -----------------------------------------------------------------------------------


def test_a_session_for_a_gives_nothing_on_bs_host(org, other_org, staff_user):
    client_a = support_client(org, open_session(org, staff_user))
    cookie = client_a.cookies["sessionid"].value
    on_b = Client(HTTP_HOST=other_org.host)
    on_b.cookies["sessionid"] = cookie

    page = on_b.get("/")
    api = on_b.get("/api/v1/agents/")

    assert (page.status_code, page["Location"]) == (302, "/login/?next=/")
    assert api.status_code == 401
    assert log(other_org, "support.request") == []


def test_staff_have_no_other_way_in_the_admin_holds_no_tenant_data():
    """The admin lists platform records only: no model of an organization's schema."""
    registered = sorted(model._meta.label for model in admin.site._registry)

    assert registered == [
        "audit.AuditEvent",  # the platform's own log (public)
        "billing.Budget",  # spend budgets: amounts per key or agent id (public, billing's)
        "billing.Invoice",
        "billing.LimitOverride",
        "billing.PlanLimit",
        "billing.PlanQuota",
        "billing.Price",
        "billing.UsageBucket",
        "tenants.Domain",
        "tenants.Plan",
        "tenants.PlatformConfigDefault",
        "tenants.Shard",  # the shard map (read-only)
        "tenants.SigningKey",
        "tenants.SpareSchema",
        "tenants.SupportSession",
        "tenants.Tenant",
    ]


def test_a_staff_account_signs_in_to_no_organization(org, staff_user):
    """Staff accounts live in `public`: an organization's login does not know them."""
    browser = Client(HTTP_HOST=org.host)

    response = browser.post(
        "/login/", {"username": staff_user.email, "password": "correct-horse-battery-staple"}
    )

    assert response.status_code == 200 and "_auth_user_id" not in browser.session


# --- Admin ---------------------------------------------------------------------------------------


@pytest.fixture
def staff_client(public_client, staff_user):
    with context.public_context():
        public_client.force_login(staff_user)
    return public_client


def test_staff_open_a_session_from_the_admin(org, staff_client, staff_user):
    changelist = "/admin/tenants/tenant/"
    chosen = {"action": "open_support_session", "_selected_action": [org.tenant.pk]}

    asked = staff_client.post(changelist, chosen)
    no_reason = staff_client.post(changelist, {**chosen, "apply": "1", "minutes": "60"})
    with context.public_context():
        assert not SupportSession.objects.exists()
    opened = staff_client.post(
        changelist, {**chosen, "apply": "1", "reason": REASON, "minutes": "120"}
    )

    assert asked.status_code == no_reason.status_code == 200
    assert b"Open a support session into Acme Inc" in asked.content
    assert b"This field is required" in no_reason.content
    assert opened.status_code == 200 and "no-store" in opened["Cache-Control"]
    with context.public_context():
        session = SupportSession.objects.get()
    assert (session.reason, session.until - session.started_at) == (REASON, timedelta(hours=2))
    html = opened.content.decode()
    assert f'action="{org.tenant.url}support/start/"' in html
    token = re.search(r'name="token" value="([^"]+)"', html).group(1)
    # The page's token works on the organization's host.
    browser = Client(HTTP_HOST=org.host)
    assert browser.post("/support/start/", {"token": token}).status_code == 302
    assert browser.get("/").context["user"].is_support


def test_the_admin_refuses_a_duration_out_of_bounds(org, staff_client):
    response = staff_client.post(
        "/admin/tenants/tenant/",
        {
            "action": "open_support_session",
            "_selected_action": [org.tenant.pk],
            "apply": "1",
            "reason": REASON,
            "minutes": "600",
        },
    )

    assert response.status_code == 200 and b"Select a valid choice" in response.content
    with context.public_context():
        assert not SupportSession.objects.exists()


def test_staff_end_a_session_and_continue_their_own_from_the_admin(org, staff_client, staff_user):
    session = open_session(org, staff_user)
    listing = staff_client.get("/admin/tenants/supportsession/")
    chosen = {"_selected_action": [session.pk]}

    resumed = staff_client.post(
        "/admin/tenants/supportsession/", {**chosen, "action": "continue_session"}
    )
    ended = staff_client.post("/admin/tenants/supportsession/", {**chosen, "action": "end_now"})

    assert listing.status_code == 200 and REASON.encode() in listing.content.replace(
        b"&#x27;", b"'"
    )
    assert resumed.status_code == 200 and b'name="token"' in resumed.content
    assert ended.status_code == 302
    assert session_row(session).ended_by == staff_user.email
    (event,) = log(org, "support.session_ended")
    assert event.actor_kind == "staff"


def test_a_support_session_reads_what_a_viewer_reads(org, staff_user):
    client = support_client(org, open_session(org, staff_user))
    pages = {
        "/": 200,
        "/members/": 200,
        "/agents/": 200,
        "/resources/": 200,
        "/config/": 200,
        "/tools/": 200,
        "/usage/": 200,
        "/knowledge/": 200,
        "/profile/": 200,
        "/agents/new/": 403,
        "/billing/": 403,
        "/audit/": 403,
        "/secrets/": 403,
        "/settings/": 403,
        "/api-keys/": 403,
        "/deletion/": 403,
    }

    assert {path: client.get(path).status_code for path in pages} == pages


def test_the_owner_finds_the_support_session_by_actor_kind(org, staff_user, client_for):
    client = support_client(org, open_session(org, staff_user))
    client.get("/agents/")

    response = client_for(org, org.owner).get(
        "/api/v1/audit/events/", {"actor_kind": "support", "action": "support.request"}
    )

    assert response.status_code == 200
    assert [(e["actor_kind"], e["actor_label"]) for e in response.json()["results"]] == [
        ("support", staff_user.email)
    ]

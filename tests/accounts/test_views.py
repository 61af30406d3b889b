"""People pages on an organization's host: login, handoff, password reset, members, invitations."""

import re
from datetime import timedelta
from unittest import mock

import pytest
from django.contrib.messages import get_messages
from django.core import signing
from django.test import Client
from django.utils import timezone

from accounts import services
from accounts.handoff import handoff_token_make
from accounts.models import Invitation, User
from audit.models import AuditEvent
from core.actors import Actor
from organizations import services as tenant_services
from tenants import context
from tests.conftest import PASSWORD

ROLES = ["viewer", "member", "admin", "owner"]
NEW_PASSWORD = "another-long-passphrase-42"


def flash(response) -> list[str]:
    return [str(message) for message in get_messages(response.wsgi_request)]


def user_state(org, email: str) -> tuple[str, bool] | None:
    with context.tenant_context(org.tenant):
        user = User.objects.filter(email=email).first()
        return (user.role, user.is_active) if user else None


def pending_invitations(org) -> list[tuple[str, str]]:
    with context.tenant_context(org.tenant):
        return [
            (invitation.email, invitation.role)
            for invitation in Invitation.objects.order_by("email")
            if invitation.is_pending
        ]


def invite(org, email: str = "new@acme.test", role: str = "member") -> tuple[Invitation, str]:
    with context.tenant_context(org.tenant):
        return services.invitation_create(actor=Actor.for_user(org.owner), email=email, role=role)


def client_as(client_for, org, role: str | None) -> Client:
    return client_for(org, org.user(role) if role else None)


def is_login_redirect(response) -> bool:
    return response.status_code == 302 and response["Location"].startswith("/login/?next=")


# --- Login and logout --------------------------------------------------------------------------


def test_login_page_names_the_organization(org, client_for):
    response = client_for(org).get("/login/")

    assert response.status_code == 200
    assert "Log in" in response.text
    assert "Acme Inc" in response.text
    assert 'href="/password-reset/"' in response.text


def test_a_member_logs_in_with_email_and_password(org, client_for):
    client = client_for(org)

    response = client.post("/login/", {"username": "Member@Acme.test", "password": PASSWORD})

    assert (response.status_code, response["Location"]) == (302, "/")
    assert client.get("/").context["user"].email == "member@acme.test"


def test_a_wrong_password_is_refused_in_place(org, client_for):
    response = client_for(org).post(
        "/login/", {"username": "member@acme.test", "password": "wrong"}
    )

    assert response.status_code == 200
    assert "do not match an account in this organization" in response.text
    assert not response.context["user"].is_authenticated


def test_a_user_of_another_organization_cannot_log_in_here(org, other_org, client_for):
    client = client_for(other_org)

    response = client.post("/login/", {"username": "owner@acme.test", "password": PASSWORD})

    assert response.status_code == 200
    assert "do not match an account in this organization" in response.text
    assert is_login_redirect(client.get("/"))


def test_a_session_cookie_of_one_organization_is_anonymous_on_another(org, other_org, client_for):
    acme = client_for(org, org.owner)
    assert acme.get("/").status_code == 200
    globex = client_for(other_org)
    globex.cookies["sessionid"] = acme.cookies["sessionid"].value

    assert is_login_redirect(globex.get("/"))
    assert is_login_redirect(globex.get("/members/"))


def test_logout_is_a_post_and_ends_the_session(org, client_for):
    client = client_for(org, org.member)

    assert client.get("/logout/").status_code == 405
    response = client.post("/logout/")

    assert (response.status_code, response["Location"]) == (302, "/login/")
    assert flash(response) == ["You are signed out."]
    assert is_login_redirect(client.get("/"))


def test_a_deactivated_members_session_stops_at_the_next_request(org, client_for):
    client = client_for(org, org.member)
    assert client.get("/").status_code == 200

    with context.tenant_context(org.tenant):
        services.member_deactivate(actor=Actor.for_user(org.owner), user_id=org.member.pk)

    assert is_login_redirect(client.get("/"))
    assert (
        client_for(org)
        .post("/login/", {"username": "member@acme.test", "password": PASSWORD})
        .status_code
        == 200
    )  # the login form again, not a redirect


# --- Sign-in handoff after signup --------------------------------------------------------------


def post_handoff(org, token: str) -> Client:
    # CSRF checks on: the handoff is posted from the public host, without this host's CSRF token.
    client = Client(HTTP_HOST=org.host, enforce_csrf_checks=True)
    client.response = client.post("/login/handoff/", {"token": token})
    return client


def test_the_handoff_signs_the_user_in_once(org):
    token = handoff_token_make(tenant=org.tenant, user_id=org.owner.pk)

    first = post_handoff(org, token)

    assert (first.response.status_code, first.response["Location"]) == (302, "/")
    assert first.get("/").context["user"].email == "owner@acme.test"
    with context.tenant_context(org.tenant):
        logins = AuditEvent.objects.filter(action="auth.login", resource_id="owner@acme.test")
        assert list(logins.values_list("result", "details")) == [("success", {"method": "handoff"})]
    second = post_handoff(org, token)
    assert second.response.status_code == 400
    assert "Sign-in link not valid" in second.response.text
    assert is_login_redirect(second.get("/"))


def test_an_expired_handoff_token_is_refused(org):
    with mock.patch("time.time", return_value=timezone.now().timestamp() - 61):
        token = handoff_token_make(tenant=org.tenant, user_id=org.owner.pk)

    client = post_handoff(org, token)

    assert client.response.status_code == 400
    assert is_login_redirect(client.get("/"))


def test_a_tampered_handoff_token_is_refused(org):
    token = handoff_token_make(tenant=org.tenant, user_id=org.owner.pk)
    payload = signing.loads(token, salt="agentplane.accounts.handoff")
    forged = signing.dumps({**payload, "user": org.admin.pk}, salt="another-salt")
    edited = token[:-2] + ("AA" if not token.endswith("AA") else "BB")

    for bad in (forged, edited, "", "x" * 5000):
        client = post_handoff(org, bad)
        assert client.response.status_code == 400
        assert is_login_redirect(client.get("/"))


def test_a_handoff_token_for_another_organization_is_refused(org, other_org):
    token = handoff_token_make(tenant=org.tenant, user_id=org.owner.pk)

    client = post_handoff(other_org, token)

    assert client.response.status_code == 400
    assert is_login_redirect(client.get("/"))
    # Refused before the nonce was spent: it still works where it belongs.
    assert post_handoff(org, token).response.status_code == 302


def test_the_handoff_fails_closed_when_the_cache_is_down(org):
    token = handoff_token_make(tenant=org.tenant, user_id=org.owner.pk)

    with mock.patch("accounts.handoff.cache.add", side_effect=ConnectionError("redis down")):
        client = post_handoff(org, token)

    assert client.response.status_code == 400
    assert is_login_redirect(client.get("/"))


def test_the_handoff_refuses_a_deactivated_user(org):
    with context.tenant_context(org.tenant):
        services.member_deactivate(actor=Actor.for_user(org.owner), user_id=org.admin.pk)
    token = handoff_token_make(tenant=org.tenant, user_id=org.admin.pk)

    assert post_handoff(org, token).response.status_code == 400


def test_the_handoff_accepts_only_post(org, client_for):
    assert client_for(org).get("/login/handoff/").status_code == 405


# --- Password reset ----------------------------------------------------------------------------


def test_password_reset_mails_a_link_to_this_host_and_the_reset_works(org, client_for, mailoutbox):
    client = client_for(org)

    response = client.post("/password-reset/", {"email": "member@acme.test"})

    assert (response.status_code, response["Location"]) == (302, "/password-reset/sent/")
    assert [message.to for message in mailoutbox] == [["member@acme.test"]]
    assert "Acme Inc" in mailoutbox[0].subject
    link = re.search(r"http://acme\.localhost:8000(/password-reset/\S+/\S+/)", mailoutbox[0].body)
    assert link is not None
    form_page = client.get(link.group(1), follow=True)
    assert form_page.status_code == 200
    assert form_page.context["validlink"] is True
    done = client.post(
        form_page.redirect_chain[-1][0],
        {"new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD},
    )
    assert (done.status_code, done["Location"]) == (302, "/password-reset/done/")
    assert client.get("/password-reset/done/").status_code == 200
    fresh = client_for(org)
    assert (
        fresh.post("/login/", {"username": "member@acme.test", "password": PASSWORD}).status_code
        == 200
    )
    assert (
        fresh.post(
            "/login/", {"username": "member@acme.test", "password": NEW_PASSWORD}
        ).status_code
        == 302
    )


def test_password_reset_sends_nothing_for_another_organizations_user(org, client_for, mailoutbox):
    response = client_for(org).post("/password-reset/", {"email": "member@globex.test"})

    assert response.status_code == 302  # the same answer: no hint whether the account exists
    assert mailoutbox == []


def test_a_bad_password_reset_link_shows_a_clear_page(org, client_for):
    response = client_for(org).get("/password-reset/MQ/bad-token/", follow=True)

    assert response.status_code == 200
    assert "This reset link cannot be used" in response.text


# --- Members page ------------------------------------------------------------------------------


@pytest.mark.parametrize("role", ROLES)
def test_every_role_sees_the_member_list(org, client_for, role):
    response = client_as(client_for, org, role).get("/members/")

    assert response.status_code == 200
    emails = [row["user"].email for row in response.context["rows"]]
    assert emails == sorted(f"{r}@acme.test" for r in ROLES)
    assert "globex" not in response.text


@pytest.mark.parametrize(
    ("role", "can_manage"),
    [("viewer", False), ("member", False), ("admin", True), ("owner", True)],
)
def test_only_owners_and_admins_see_the_controls(org, client_for, role, can_manage):
    invite(org)

    response = client_as(client_for, org, role).get("/members/")

    assert ('action="/members/invite/"' in response.text) is can_manage
    assert ("new@acme.test" in response.text) is can_manage  # pending invitations
    assert ("Deactivate" in response.text) is can_manage
    assert ('name="role"' in response.text) is can_manage


def test_the_controls_follow_the_rules(org, client_for):
    """An admin gets no controls for the owner or themselves, and cannot offer the owner role."""
    response = client_for(org, org.admin).get("/members/")

    manageable = {row["user"].email for row in response.context["rows"] if row["is_manageable"]}
    assert manageable == {"member@acme.test", "viewer@acme.test"}
    assert [value for value, _ in response.context["assignable_roles"]] == [
        "admin",
        "member",
        "viewer",
    ]
    owner_view = client_for(org, org.owner).get("/members/")
    assert [value for value, _ in owner_view.context["assignable_roles"]] == [
        "owner",
        "admin",
        "member",
        "viewer",
    ]


def test_the_member_list_runs_a_fixed_number_of_queries(org, client_for, django_assert_num_queries):
    client = client_for(org, org.owner)
    client.get("/members/")  # warm the host cache
    for email in ("a@acme.test", "b@acme.test", "c@acme.test"):
        invite(org, email)

    # session, user, members, pending invitations (with who sent them)
    with django_assert_num_queries(4):
        response = client.get("/members/")
    assert response.status_code == 200


def test_anonymous_visitors_are_sent_to_login(org, client_for):
    client = client_for(org)

    assert is_login_redirect(client.get("/members/"))
    assert is_login_redirect(client.post("/members/invite/", {"email": "x@acme.test"}))
    assert is_login_redirect(client.post(f"/members/{org.member.pk}/role/", {"role": "viewer"}))
    assert is_login_redirect(client.post(f"/members/{org.member.pk}/deactivate/"))


# --- Invite ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("role", "status"),
    [(None, 302), ("viewer", 403), ("member", 403), ("admin", 302), ("owner", 302)],
)
def test_invite_role_matrix(
    org, client_for, mailoutbox, django_capture_on_commit_callbacks, role, status
):
    with django_capture_on_commit_callbacks() as published:
        response = client_as(client_for, org, role).post(
            "/members/invite/", {"email": "New@Acme.test", "role": "member"}
        )

    assert response.status_code == status
    assert len(published) == (1 if role in ("admin", "owner") else 0)  # the change event
    if role in ("admin", "owner"):
        assert response["Location"] == "/members/"
        assert flash(response) == ["Invitation sent to new@acme.test."]
        assert pending_invitations(org) == [("new@acme.test", "member")]
        assert [message.to for message in mailoutbox] == [["new@acme.test"]]
        assert re.search(r"http://acme\.localhost:8000/invite/[\w-]{40,}/", mailoutbox[0].body)
    else:
        assert pending_invitations(org) == []
        assert mailoutbox == []


def test_an_admin_cannot_invite_an_owner(org, client_for, mailoutbox):
    response = client_for(org, org.admin).post(
        "/members/invite/", {"email": "boss@acme.test", "role": "owner"}
    )

    assert (response.status_code, response["Location"]) == (302, "/members/")
    assert flash(response) == ["Only an owner can grant the owner role."]
    assert pending_invitations(org) == []
    assert mailoutbox == []


def test_an_owner_can_invite_an_owner(org, client_for):
    client_for(org, org.owner).post("/members/invite/", {"email": "co@acme.test", "role": "owner"})

    assert pending_invitations(org) == [("co@acme.test", "owner")]


@pytest.mark.parametrize(
    ("email", "error"),
    [
        ("not-an-email", "Enter a valid email address."),
        ("", "This field is required."),
        ("member@acme.test", "This person is already a member."),
    ],
)
def test_a_bad_invitation_shows_the_error_in_place(org, client_for, mailoutbox, email, error):
    response = client_for(org, org.admin).post(
        "/members/invite/", {"email": email, "role": "member"}
    )

    assert response.status_code == 400
    assert response.context["invite_form"].errors["email"] == [error]
    assert error in response.text
    assert pending_invitations(org) == []
    assert mailoutbox == []


def test_an_unknown_role_is_refused_in_place(org, client_for):
    response = client_for(org, org.owner).post(
        "/members/invite/", {"email": "x@acme.test", "role": "superuser"}
    )

    assert response.status_code == 400
    assert "role" in response.context["invite_form"].errors
    assert pending_invitations(org) == []


# --- Revoke ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("role", "status"),
    [(None, 302), ("viewer", 403), ("member", 403), ("admin", 302), ("owner", 302)],
)
def test_revoke_role_matrix(org, client_for, django_capture_on_commit_callbacks, role, status):
    invitation, _ = invite(org)

    with django_capture_on_commit_callbacks() as published:
        response = client_as(client_for, org, role).post(
            f"/members/invitations/{invitation.pk}/revoke/"
        )

    assert response.status_code == status
    assert len(published) == (1 if role in ("admin", "owner") else 0)
    if role in ("admin", "owner"):
        assert response["Location"] == "/members/"
        assert pending_invitations(org) == []
    else:
        assert pending_invitations(org) == [("new@acme.test", "member")]


def test_revoking_an_unknown_invitation_is_404(org, client_for):
    assert client_for(org, org.owner).post("/members/invitations/999999/revoke/").status_code == 404


# --- Change role -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("role", "status"),
    [(None, 302), ("viewer", 403), ("member", 403), ("admin", 302), ("owner", 302)],
)
def test_change_role_matrix(org, client_for, django_capture_on_commit_callbacks, role, status):
    with django_capture_on_commit_callbacks() as published:
        response = client_as(client_for, org, role).post(
            f"/members/{org.viewer.pk}/role/", {"role": "member"}
        )

    assert response.status_code == status
    assert len(published) == (1 if role in ("admin", "owner") else 0)
    expected = "member" if role in ("admin", "owner") else "viewer"
    assert user_state(org, "viewer@acme.test") == (expected, True)
    if role in ("admin", "owner"):
        assert flash(response) == ["Viewer of Acme Inc is now member."]


def test_an_admin_cannot_grant_owner(org, client_for):
    response = client_for(org, org.admin).post(f"/members/{org.member.pk}/role/", {"role": "owner"})

    assert response.status_code == 302
    assert flash(response) == ["Only an owner can grant the owner role."]
    assert user_state(org, "member@acme.test") == ("member", True)


def test_an_admin_cannot_touch_an_owner(org, client_for):
    demote = client_for(org, org.admin).post(f"/members/{org.owner.pk}/role/", {"role": "viewer"})
    deactivate = client_for(org, org.admin).post(f"/members/{org.owner.pk}/deactivate/")

    assert flash(demote) == ["Only an owner can change an owner."]
    assert flash(deactivate) == ["Only an owner can change an owner."]
    assert user_state(org, "owner@acme.test") == ("owner", True)


def test_an_owner_can_promote_to_owner(org, client_for):
    client_for(org, org.owner).post(f"/members/{org.admin.pk}/role/", {"role": "owner"})

    assert user_state(org, "admin@acme.test") == ("owner", True)


@pytest.mark.parametrize("role", ["admin", "owner"])
def test_nobody_can_change_themselves(org, client_for, role):
    user = org.user(role)

    demote = client_for(org, user).post(f"/members/{user.pk}/role/", {"role": "viewer"})
    deactivate = client_for(org, user).post(f"/members/{user.pk}/deactivate/")

    assert flash(demote) == ["You cannot change your own membership."]
    assert flash(deactivate) == ["You cannot change your own membership."]
    assert user_state(org, user.email) == (role, True)


def test_the_last_owner_cannot_be_demoted_or_deactivated(org, client_for):
    """The only owner can only be changed by an owner, who would be themselves: refused."""
    client = client_for(org, org.owner)

    client.post(f"/members/{org.owner.pk}/role/", {"role": "admin"})
    client.post(f"/members/{org.owner.pk}/deactivate/")

    assert user_state(org, "owner@acme.test") == ("owner", True)


def test_an_invalid_role_value_changes_nothing(org, client_for):
    response = client_for(org, org.owner).post(f"/members/{org.member.pk}/role/", {"role": "god"})

    assert flash(response) == ["Choose a valid role."]
    assert user_state(org, "member@acme.test") == ("member", True)


def test_changing_an_unknown_member_is_404(org, client_for):
    client = client_for(org, org.owner)

    assert client.post("/members/999999/role/", {"role": "viewer"}).status_code == 404
    assert client.post("/members/999999/deactivate/").status_code == 404


# --- Deactivate --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("role", "status"),
    [(None, 302), ("viewer", 403), ("member", 403), ("admin", 302), ("owner", 302)],
)
def test_deactivate_role_matrix(org, client_for, django_capture_on_commit_callbacks, role, status):
    target = org.viewer if role != "viewer" else org.member

    with django_capture_on_commit_callbacks() as published:
        response = client_as(client_for, org, role).post(f"/members/{target.pk}/deactivate/")

    assert response.status_code == status
    assert len(published) == (1 if role in ("admin", "owner") else 0)
    assert user_state(org, target.email) == (target.role, role not in ("admin", "owner"))


def test_a_deactivated_member_is_shown_as_such(org, client_for):
    client = client_for(org, org.owner)
    client.post(f"/members/{org.viewer.pk}/deactivate/")

    response = client.get("/members/")

    row = next(row for row in response.context["rows"] if row["user"].email == "viewer@acme.test")
    assert (row["user"].is_active, row["is_manageable"]) == (False, False)
    assert "Deactivated" in response.text


# --- Cross-tenant ------------------------------------------------------------------------------


def test_another_orgs_admin_cannot_act_on_our_members(org, other_org, client_for):
    with context.tenant_context(org.tenant):
        extra = services.user_create(
            actor=Actor.system("tests"), email="extra@acme.test", password=PASSWORD, role="viewer"
        )
    acme_invitation, _ = invite(org)
    with context.tenant_context(other_org.tenant):
        assert not User.objects.filter(pk=extra.pk).exists()
        assert not Invitation.objects.filter(pk=acme_invitation.pk).exists()

    # On globex's own host, acme's ids do not exist.
    globex_admin = client_for(other_org, other_org.admin)
    assert globex_admin.post(f"/members/{extra.pk}/role/", {"role": "admin"}).status_code == 404
    assert globex_admin.post(f"/members/{extra.pk}/deactivate/").status_code == 404
    assert (
        globex_admin.post(f"/members/invitations/{acme_invitation.pk}/revoke/").status_code == 404
    )
    # On acme's host, globex's session means nothing.
    on_acme = client_for(org)
    on_acme.cookies["sessionid"] = globex_admin.cookies["sessionid"].value
    assert is_login_redirect(on_acme.post(f"/members/{extra.pk}/deactivate/"))
    assert is_login_redirect(on_acme.post("/members/invite/", {"email": "x@acme.test"}))

    assert user_state(org, "extra@acme.test") == ("viewer", True)
    assert pending_invitations(org) == [("new@acme.test", "member")]


# --- Accepting an invitation -------------------------------------------------------------------


def open_invitation(org, token: str) -> Client:
    client = Client(HTTP_HOST=org.host)
    response = client.get(f"/invite/{token}/")
    assert (response.status_code, response["Location"]) == (302, "/invite/accept/")
    assert response["Referrer-Policy"] == "no-referrer"
    return client


def accept(client: Client, password: str = NEW_PASSWORD):
    return client.post(
        "/invite/accept/",
        {"full_name": "Nova Newcomer", "password": password, "password_confirm": password},
    )


def test_an_invitation_from_the_email_makes_a_member(org, client_for, mailoutbox):
    client_for(org, org.admin).post(
        "/members/invite/", {"email": "nova@acme.test", "role": "viewer"}
    )
    path = re.search(r"http://acme\.localhost:8000(/invite/[\w-]+/)", mailoutbox[0].body).group(1)

    client = open_invitation(org, path.split("/")[2])
    page = client.get("/invite/accept/")
    assert page.status_code == 200
    assert "nova@acme.test" in page.text
    assert "Join Acme Inc" in page.text
    response = accept(client)

    assert (response.status_code, response["Location"]) == (302, "/")
    assert user_state(org, "nova@acme.test") == ("viewer", True)
    assert client.get("/").context["user"].email == "nova@acme.test"
    assert pending_invitations(org) == []


def test_an_invitation_works_once(org):
    _, token = invite(org)
    accept(open_invitation(org, token))

    second = open_invitation(org, token)
    page = second.get("/invite/accept/")
    response = accept(second, "yet-another-passphrase-7")

    assert page.status_code == 400
    assert "This invitation cannot be used" in page.text
    assert response.status_code == 400
    with context.tenant_context(org.tenant):
        assert User.objects.get(email="new@acme.test").check_password(NEW_PASSWORD)


def test_an_expired_invitation_is_refused(org):
    invitation, token = invite(org)
    with context.tenant_context(org.tenant):
        Invitation.objects.filter(pk=invitation.pk).update(
            expires_at=timezone.now() - timedelta(seconds=1)
        )
    client = open_invitation(org, token)

    assert client.get("/invite/accept/").status_code == 400
    assert accept(client).status_code == 400
    assert user_state(org, "new@acme.test") is None


def test_a_seven_day_old_invitation_is_expired(org):
    invitation, token = invite(org)
    assert invitation.expires_at - invitation.created_at == timedelta(days=7)
    with context.tenant_context(org.tenant):
        Invitation.objects.filter(pk=invitation.pk).update(
            created_at=invitation.created_at - timedelta(days=7),
            expires_at=invitation.expires_at - timedelta(days=7),
        )

    assert accept(open_invitation(org, token)).status_code == 400
    assert user_state(org, "new@acme.test") is None


def test_a_revoked_invitation_is_refused(org):
    invitation, token = invite(org)
    with context.tenant_context(org.tenant):
        services.invitation_revoke(actor=Actor.for_user(org.owner), invitation_id=invitation.pk)

    assert accept(open_invitation(org, token)).status_code == 400
    assert user_state(org, "new@acme.test") is None


def test_an_invitation_does_not_work_on_another_organizations_host(org, other_org):
    _, token = invite(org)

    client = open_invitation(other_org, token)

    assert client.get("/invite/accept/").status_code == 400
    assert accept(client).status_code == 400
    assert user_state(other_org, "new@acme.test") is None
    assert pending_invitations(org) == [("new@acme.test", "member")]


def test_a_weak_password_is_refused_in_place(org):
    _, token = invite(org)
    client = open_invitation(org, token)

    response = accept(client, "short")

    assert response.status_code == 400
    assert "This password is too short." in response.text
    assert user_state(org, "new@acme.test") is None
    assert pending_invitations(org) == [("new@acme.test", "member")]
    mismatch = client.post(
        "/invite/accept/",
        {"full_name": "N", "password": NEW_PASSWORD, "password_confirm": NEW_PASSWORD + "x"},
    )
    assert mismatch.context["form"].errors == {
        "password_confirm": ["The two passwords do not match."]
    }


def test_the_accept_page_without_an_invitation_is_a_clear_page(org, client_for):
    response = client_for(org).get("/invite/accept/")

    assert response.status_code == 400
    assert "This invitation cannot be used" in response.text


def test_an_unknown_invitation_token_is_refused(org):
    client = open_invitation(org, "not-a-real-token")

    assert client.get("/invite/accept/").status_code == 400


# --- Suspension --------------------------------------------------------------------------------


def test_a_suspended_organization_shows_its_users_the_suspended_page(
    org, client_for, django_capture_on_commit_callbacks
):
    client = client_for(org, org.member)
    assert client.get("/").status_code == 200  # the host is now cached as active

    with django_capture_on_commit_callbacks(execute=True):
        tenant_services.tenant_suspend(
            actor=Actor.system("tests"), tenant=org.tenant, reason="tests"
        )

    for path in ("/", "/members/", "/login/"):
        response = client.get(path)
        assert response.status_code == 403
        assert "Acme Inc is suspended" in response.text
    assert (
        client.post("/login/", {"username": "member@acme.test", "password": PASSWORD}).status_code
        == 403
    )

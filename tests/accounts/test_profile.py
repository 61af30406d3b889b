"""Your profile: display name, password change while signed in, sessions and signing out of
the others; each audited, refused without change when wrong, and bound to one organization."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from django.core.exceptions import PermissionDenied

from accounts import services
from accounts.models import User
from audit.models import AuditEvent
from core.actors import Actor
from tests.conftest import PASSWORD

PAGE = "/profile/"
NEW_PASSWORD = "a-new-long-passphrase-9"


def events(in_tenant, org, action: str) -> list[dict]:
    with in_tenant(org):
        return list(
            AuditEvent.objects.filter(action=action)
            .order_by("sequence")
            .values_list("actor_label", "details")
        )


@pytest.mark.parametrize("role", [None, "viewer", "member", "admin", "owner"])
def test_the_profile_page_by_role(org, client_for, role):
    response = client_for(org, org.user(role) if role else None).get(PAGE)
    if role is None:
        assert response.status_code == 302 and response["Location"].startswith("/login/")
    else:
        assert response.status_code == 200
        assert org.user(role).email in response.text
        assert 'href="/profile/"' in response.text  # the user menu links it


def test_the_display_name_is_saved_and_audited(org, client_for, in_tenant):
    client = client_for(org, org.member)

    response = client.post(PAGE, {"full_name": "  Mia   Member "})

    assert (response.status_code, response["Location"]) == (302, PAGE)
    with in_tenant(org):
        assert User.objects.get(pk=org.member.pk).full_name == "Mia Member"
    assert events(in_tenant, org, "user.profile_changed") == [
        (org.member.email, {"changed": ["full_name"]})
    ]
    assert "Mia Member" in client.get("/").text  # the menu shows the name, then the email


def test_a_too_long_name_is_refused_and_changes_nothing(org, client_for, in_tenant):
    with in_tenant(org):
        before = User.objects.get(pk=org.member.pk).full_name

    response = client_for(org, org.member).post(PAGE, {"full_name": "x" * 151})

    assert response.status_code == 400
    assert "data-error-summary" in response.text
    with in_tenant(org):
        assert User.objects.get(pk=org.member.pk).full_name == before
    assert events(in_tenant, org, "user.profile_changed") == []


@pytest.mark.parametrize(
    ("data", "field", "message"),
    [
        (
            {"current_password": "wrong", "new_password": NEW_PASSWORD},
            "current_password",
            "That is not your current password.",
        ),
        (
            {"current_password": PASSWORD, "new_password": "12345678"},
            "new_password",
            "This password is entirely numeric.",
        ),
        (
            {"current_password": PASSWORD, "new_password": NEW_PASSWORD, "confirm": "other"},
            "new_password_confirm",
            "The two passwords do not match.",
        ),
    ],
)
def test_a_bad_password_change_is_refused(org, client_for, in_tenant, data, field, message):
    confirm = data.pop("confirm", data["new_password"])
    response = client_for(org, org.viewer).post(
        "/profile/password/", {**data, "new_password_confirm": confirm}
    )

    assert response.status_code == 400
    assert message in response.context["password_form"].errors[field]
    with in_tenant(org):
        assert User.objects.get(pk=org.viewer.pk).check_password(PASSWORD)
    assert events(in_tenant, org, "user.password_changed") == []


def test_changing_the_password_keeps_this_session_and_ends_the_others(org, client_for, in_tenant):
    here, elsewhere = client_for(org, org.viewer), client_for(org, org.viewer)
    assert elsewhere.get(PAGE).status_code == 200

    response = here.post(
        "/profile/password/",
        {
            "current_password": PASSWORD,
            "new_password": NEW_PASSWORD,
            "new_password_confirm": NEW_PASSWORD,
        },
    )

    assert (response.status_code, response["Location"]) == (302, PAGE)
    with in_tenant(org):
        assert User.objects.get(pk=org.viewer.pk).check_password(NEW_PASSWORD)
    assert here.get(PAGE).status_code == 200
    assert elsewhere.get(PAGE).status_code == 302  # signed out
    assert events(in_tenant, org, "user.password_changed") == [(org.viewer.email, {})]


def test_sessions_are_listed_and_the_others_signed_out(org, other_org, client_for, in_tenant):
    here, second, third = (client_for(org, org.admin) for _ in range(3))
    colleague = client_for(org, org.owner)
    # The user with the same id in another organization is another person.
    same_id_elsewhere = client_for(other_org, other_org.admin)
    for client in (second, third, colleague, same_id_elsewhere):
        assert client.get("/").status_code == 200

    page = here.get(PAGE)
    assert len(page.context["sessions"]) == 3
    assert sum(item["is_current"] for item in page.context["sessions"]) == 1
    assert page.context["other_sessions"] == 2
    assert "Sign out of the 2 other sessions" in page.text

    response = here.post("/profile/sessions/end-others/")

    assert (response.status_code, response["Location"]) == (302, PAGE)
    assert here.get(PAGE).status_code == 200
    assert second.get("/").status_code == 302 and third.get("/").status_code == 302
    assert colleague.get("/").status_code == 200
    assert same_id_elsewhere.get("/").status_code == 200
    assert events(in_tenant, org, "user.sessions_ended") == [(org.admin.email, {"ended": 2})]
    assert len(here.get(PAGE).context["sessions"]) == 1


def test_an_api_key_cannot_change_anyones_account(org, in_tenant):
    key_actor = Actor(kind="api_key", id="1", label="key", permissions=frozenset({"org:read"}))
    with in_tenant(org), pytest.raises(PermissionDenied):
        services.profile_update(actor=key_actor, full_name="Mallory")
    with in_tenant(org), pytest.raises(PermissionDenied):
        services.password_change(
            actor=key_actor, current_password=PASSWORD, new_password=NEW_PASSWORD
        )
    with in_tenant(org):
        assert not User.objects.filter(full_name="Mallory").exists()


# --- Invitations: the link to copy, resending -------------------------------------------------


def invite(client, email="newcomer@acme.test"):
    return client.post("/members/invite/", {"email": email, "role": "member"})


def shown_link(page) -> str:
    return page.context["invitation_link"]["link"] if page.context["invitation_link"] else ""


def test_the_new_invitation_link_is_shown_once_to_copy(org, client_for):
    client = client_for(org, org.admin)

    assert invite(client).status_code == 302
    first, again = client.get("/members/"), client.get("/members/")

    link = shown_link(first)
    assert link.startswith(f"{org.tenant.url.rstrip('/')}/invite/")
    assert 'data-copy-from="#invitation-link-value"' in first.text
    assert "no-store" in first["Cache-Control"]
    assert shown_link(again) == "" and link not in again.text
    # The link works (it opens the acceptance page).
    opened = client_for(org).get(urlsplit(link).path)
    assert (opened.status_code, opened["Location"]) == (302, "/invite/accept/")


def test_resending_gives_a_new_link_and_a_new_week_and_is_audited(org, client_for, in_tenant):
    from datetime import timedelta

    from accounts.models import Invitation

    client = client_for(org, org.admin)
    invite(client)
    old_link = shown_link(client.get("/members/"))
    with in_tenant(org):
        invitation = Invitation.objects.get(email="newcomer@acme.test", revoked_at=None)
        Invitation.objects.filter(pk=invitation.pk).update(
            expires_at=invitation.expires_at - timedelta(days=6)
        )

    response = client.post(f"/members/invitations/{invitation.pk}/resend/")

    assert (response.status_code, response["Location"]) == (302, "/members/")
    new_link = shown_link(client.get("/members/"))
    assert new_link and new_link != old_link
    with in_tenant(org):
        resent = Invitation.objects.get(pk=invitation.pk)
        assert resent.expires_at > invitation.expires_at - timedelta(minutes=1)
        assert services.invitation_get_pending(token=old_link.rsplit("/", 2)[-2]) is None
        assert services.invitation_get_pending(token=new_link.rsplit("/", 2)[-2]) == resent
    assert events(in_tenant, org, "invitation.resent")[-1][0] == org.admin.email


def test_resending_is_refused_to_members_and_strangers(org, other_org, client_for, in_tenant):
    from accounts.models import Invitation

    invite(client_for(org, org.admin))
    with in_tenant(org):
        invitation = Invitation.objects.get(email="newcomer@acme.test", revoked_at=None)
    path = f"/members/invitations/{invitation.pk}/resend/"

    member = client_for(org, org.member).post(path)
    stranger = client_for(other_org, other_org.admin).post(path)

    assert member.status_code in (302, 403)
    assert stranger.status_code == 404
    with in_tenant(org):
        assert Invitation.objects.get(pk=invitation.pk).token_hash == invitation.token_hash
    assert [result for _, result in _resent_results(in_tenant, org)] == ["denied"]


def _resent_results(in_tenant, org):
    with in_tenant(org):
        return list(
            AuditEvent.objects.filter(action="invitation.resent").values_list(
                "actor_label", "result"
            )
        )

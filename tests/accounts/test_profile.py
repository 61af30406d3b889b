"""Your profile: display name, password change while signed in, sessions and signing out of
the others; each audited, refused without change when wrong, and bound to one organization."""

from __future__ import annotations

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

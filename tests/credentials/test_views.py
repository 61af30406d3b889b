"""The portal's API keys page: who sees it, the secret shown once, revocation, organizations."""

from __future__ import annotations

import pytest

from credentials.models import ApiKey
from tests.credentials.helpers import api_key

PAGE = "/api-keys/"


@pytest.mark.parametrize(
    ("role", "status"),
    [(None, 302), ("viewer", 403), ("member", 403), ("admin", 200), ("owner", 200)],
)
def test_the_page_by_role(org, client_for, role, status):
    user = org.user(role) if role else None
    response = client_for(org, user).get(PAGE)
    assert response.status_code == status
    if status == 302:
        assert response["Location"].startswith("/login/")


def test_the_section_is_in_the_navigation_of_admins_only(org, client_for):
    admin_page = client_for(org, org.admin).get("/").content.decode()
    member_page = client_for(org, org.member).get("/").content.decode()
    assert 'href="/api-keys/"' in admin_page
    assert 'href="/api-keys/"' not in member_page


def test_creating_a_key_redirects_and_shows_the_secret_once(org, client_for, in_tenant):
    client = client_for(org, org.admin)
    form = client.get(PAGE).content.decode()
    assert 'value="org:read"' in form and 'value="api_keys:manage"' not in form

    # Post/redirect/get: the POST answers with a redirect, so a reload cannot create a second key.
    response = client.post(
        PAGE, {"name": "deploys", "scopes": ["org:read", "members:read"], "expires_on": ""}
    )
    assert response.status_code == 302
    assert response["Location"] == PAGE + "#created-key"
    assert "agp_" not in response["Location"]
    with in_tenant(org):
        key = ApiKey.objects.get()
    assert key.scopes == ["members:read", "org:read"] and key.created_by_id == org.admin.pk

    shown = client.get(PAGE)
    assert "no-store" in shown["Cache-Control"]
    page = shown.content.decode()
    raw = page.split('id="new-key"', 1)[1].split('value="', 1)[1].split('"', 1)[0]
    assert raw.startswith(key.prefix) and len(raw) == 54
    assert 'data-copy-from="#new-key"' in page

    # Reloading the page neither shows the secret again nor creates anything.
    again = client.get(PAGE).content.decode()
    assert key.prefix in again and raw not in again and 'id="new-key"' not in again
    with in_tenant(org):
        assert ApiKey.objects.count() == 1


def test_bad_input_is_shown_and_nothing_is_created(org, client_for, in_tenant):
    response = client_for(org, org.admin).post(
        PAGE, {"name": "", "scopes": ["members:grant_owner"], "expires_on": "2001-01-01"}
    )
    assert response.status_code == 400
    page = response.content.decode()
    assert "This field is required." in page
    assert "Pick a day after today." in page
    with in_tenant(org):
        assert not ApiKey.objects.exists()


def test_a_member_cannot_create_through_the_form(org, client_for, in_tenant):
    response = client_for(org, org.member).post(PAGE, {"name": "x", "scopes": ["org:read"]})
    assert response.status_code == 403
    with in_tenant(org):
        assert not ApiKey.objects.exists()


def test_revoking_from_the_page(org, client_for, in_tenant):
    key, _ = api_key(org, ["org:read"])
    response = client_for(org, org.owner).post(f"{PAGE}{key.pk}/revoke/")
    assert response.status_code == 302
    with in_tenant(org):
        assert ApiKey.objects.get(pk=key.pk).status == "revoked"


@pytest.mark.parametrize("role", ["viewer", "member"])
def test_revoking_is_refused_without_the_permission(org, client_for, in_tenant, role):
    key, _ = api_key(org, ["org:read"])
    response = client_for(org, org.user(role)).post(f"{PAGE}{key.pk}/revoke/")
    assert response.status_code == 403
    with in_tenant(org):
        assert ApiKey.objects.get(pk=key.pk).revoked_at is None


def test_another_organizations_admin_cannot_see_or_revoke_our_keys(
    org, other_org, client_for, in_tenant
):
    key, _ = api_key(org, ["org:read"])
    client = client_for(other_org, other_org.admin)
    assert key.prefix not in client.get(PAGE).content.decode()
    assert client.post(f"{PAGE}{key.pk}/revoke/").status_code == 404
    with in_tenant(org):
        assert ApiKey.objects.get(pk=key.pk).revoked_at is None

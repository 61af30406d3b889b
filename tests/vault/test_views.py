"""The portal's Secrets, Knowledge and Settings pages: roles, write-only values, other orgs."""

from __future__ import annotations

import pytest

from core.actors import Actor
from tenants import context
from vault import services
from vault.models import KnowledgeDocument, Secret

SYSTEM = Actor.system("tests")
VALUE = "ghp_portalsecretvalue_4321"


def test_an_admin_sets_a_secret_and_sees_it_masked(org, client_for):
    client = client_for(org, org.admin)

    response = client.post("/secrets/", {"name": "GITHUB_TOKEN", "value": VALUE})
    page = client.get("/secrets/")

    assert response.status_code == 302
    assert page.status_code == 200
    assert "GITHUB_TOKEN" in page.text and "••••4321" in page.text
    assert VALUE not in page.text
    assert page["Cache-Control"].startswith("max-age=0")
    with context.tenant_context(org.tenant):
        assert Secret.objects.get(name="GITHUB_TOKEN").value == VALUE


def test_a_refused_secret_form_does_not_echo_the_value(org, client_for):
    client = client_for(org, org.admin)

    response = client.post("/secrets/", {"name": "bad name", "value": VALUE})

    assert response.status_code == 400
    assert VALUE not in response.text
    with context.tenant_context(org.tenant):
        assert not Secret.objects.exists()


@pytest.mark.parametrize(("role", "get", "post"), [("viewer", 403, 403), ("member", 200, 403)])
def test_who_sees_and_sets_secrets(org, client_for, role, get, post):
    client = client_for(org, org.user(role))

    assert client.get("/secrets/").status_code == get
    assert client.post("/secrets/", {"name": "X_KEY", "value": VALUE}).status_code == post
    with context.tenant_context(org.tenant):
        assert not Secret.objects.exists()


def test_another_organizations_admin_cannot_delete_a_secret(org, other_org, client_for):
    with context.tenant_context(org.tenant):
        secret, _ = services.secret_set(actor=SYSTEM, name="ACME_ONLY", value=VALUE)
    intruder = client_for(other_org, other_org.admin)

    assert intruder.post(f"/secrets/{secret.pk}/delete/").status_code == 404
    assert "ACME_ONLY" not in intruder.get("/secrets/").text
    with context.tenant_context(org.tenant):
        assert Secret.objects.filter(pk=secret.pk).exists()


def test_knowledge_pages_create_search_read_edit_delete(org, client_for):
    client = client_for(org, org.member)

    created = client.post(
        "/knowledge/new/", {"title": "Refunds", "tags": "policy, Sales", "text": "30 days."}
    )
    with context.tenant_context(org.tenant):
        document = KnowledgeDocument.objects.get()
    assert created.status_code == 302
    assert document.tags == ["policy", "sales"]
    assert "Refunds" in client.get("/knowledge/?search=refu").text
    assert "Refunds" not in client.get("/knowledge/?tag=hr").text
    assert "30 days." in client.get(f"/knowledge/{document.pk}/").text
    edited = client.post(
        f"/knowledge/{document.pk}/edit/", {"title": "Refunds", "tags": "", "text": "14 days."}
    )
    assert edited.status_code == 302
    assert "14 days." in client.get(f"/knowledge/{document.pk}/").text
    assert client.post(f"/knowledge/{document.pk}/delete/").status_code == 302
    with context.tenant_context(org.tenant):
        assert not KnowledgeDocument.objects.exists()


def test_a_viewer_reads_knowledge_but_cannot_write(org, client_for):
    with context.tenant_context(org.tenant):
        document = services.knowledge_create(actor=SYSTEM, title="FAQ", text="Answers.")
    client = client_for(org, org.viewer)

    assert "Answers." in client.get(f"/knowledge/{document.pk}/").text
    assert client.post("/knowledge/new/", {"title": "x", "text": "y"}).status_code == 403
    assert client.post(f"/knowledge/{document.pk}/delete/").status_code == 403


def test_another_organization_gets_404_for_a_document(org, other_org, client_for):
    with context.tenant_context(org.tenant):
        document = services.knowledge_create(actor=SYSTEM, title="Plans", text="private")
    intruder = client_for(other_org, other_org.admin)

    for path in (f"/knowledge/{document.pk}/", f"/knowledge/{document.pk}/edit/"):
        assert intruder.get(path).status_code == 404
    assert intruder.post(f"/knowledge/{document.pk}/delete/").status_code == 404
    assert "Plans" not in intruder.get("/knowledge/?search=plans").text


def test_only_the_owner_rotates_the_data_key(org, client_for):
    admin = client_for(org, org.admin)
    page = admin.get("/settings/")
    refused = admin.post("/settings/data-key/rotate/")

    assert page.status_code == 200
    assert "Only an owner can rotate" in page.text
    assert refused.status_code == 403
    assert client_for(org, org.member).get("/settings/").status_code == 403


def test_staff_admin_exposes_no_secret_or_document(org, public_client, staff_user, client_for):
    with context.tenant_context(org.tenant):
        services.secret_set(actor=SYSTEM, name="ADMIN_PROOF", value=VALUE)
    with context.public_context():
        public_client.force_login(staff_user)

    index = public_client.get("/admin/")

    assert index.status_code == 200
    assert "vault" not in index.text.lower() and "Secret" not in index.text
    for path in ("/admin/vault/secret/", "/admin/vault/knowledgedocument/"):
        assert public_client.get(path).status_code == 404
    # An organization's host serves no admin at all.
    assert client_for(org, org.owner).get("/admin/").status_code == 404

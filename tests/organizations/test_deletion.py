"""Two-phase deletion: the owner's request, the export during the grace period, staff cancelling,
the purge that destroys the keys first (an earlier dump becomes unreadable), all audited."""

from __future__ import annotations

import base64
import json
import subprocess
from datetime import timedelta

import pytest
from django.conf import settings as django_settings
from django.db import connection
from django.utils import timezone

from audit.models import AuditEvent
from core.actors import Actor
from organizations import services
from tenants import context, residency
from tenants.models import Tenant, TenantStatus
from tests.credentials.helpers import bearer, token_pair
from vault import crypto, keys, keystore
from vault import services as vault
from vault.models import Secret

SYSTEM = Actor.system("tests")
STAFF = Actor(kind="staff", id="1", label="staff@platform.test")
SECRET_VALUE = "sk-live-never-exported-0001"


def reload(tenant) -> Tenant:
    with context.public_context():
        return Tenant.objects.get(pk=tenant.pk)


def log(tenant, action: str) -> list[AuditEvent]:
    enter = context.tenant_context(tenant) if tenant else context.public_context()
    with enter:
        return list(AuditEvent.objects.filter(action=action).order_by("sequence"))


def test_the_owner_must_type_the_slug(org, client_for):
    client = client_for(org, org.owner)

    response = client.post("/deletion/", {"confirm_slug": "globex"})

    assert response.status_code == 400
    assert "Type “acme”" in response.text
    assert reload(org.tenant).status == TenantStatus.ACTIVE


@pytest.mark.parametrize("role", ["admin", "member", "viewer"])
def test_only_the_owner_requests_deletion(org, client_for, role):
    client = client_for(org, org.user(role))

    assert client.post("/deletion/", {"confirm_slug": "acme"}).status_code == 403
    assert client.get("/deletion/export/").status_code == 403
    assert reload(org.tenant).deletion_scheduled_for is None


def test_a_request_suspends_and_schedules_and_the_owner_can_still_export(
    org, client_for, django_capture_on_commit_callbacks
):
    owner = client_for(org, org.owner)
    admin = client_for(org, org.admin)
    access = token_pair(org, org.admin).access

    with django_capture_on_commit_callbacks(execute=True):
        response = owner.post("/deletion/", {"confirm_slug": " ACME "})

    assert response.status_code == 302
    tenant = reload(org.tenant)
    assert tenant.status == TenantStatus.SUSPENDED
    expected = tenant.deletion_requested_at + timedelta(days=django_settings.DELETION_GRACE_DAYS)
    assert tenant.deletion_scheduled_for == expected
    assert tenant.deletion_requested_by == "owner@acme.test"
    assert len(log(None, "organization.deletion_requested")) == 1
    assert len(log(tenant, "organization.deletion_requested")) == 1
    # Suspended: every page and the API are refused, but the owner reaches the deletion pages.
    assert owner.get("/").status_code == 403
    assert admin.get("/agents/").status_code == 403
    assert client_for(org).get("/api/v1/agents/", **bearer(access)).status_code == 403
    page = owner.get("/deletion/")
    assert page.status_code == 200 and "data-scheduled-for" in page.text
    assert owner.get("/deletion/export/").status_code == 200
    assert admin.get("/deletion/").status_code == 403


def read_export(response) -> dict:
    return json.loads(b"".join(response.streaming_content))


def test_the_export_holds_everything_but_secrets_and_credentials(org, other_org, client_for):
    with context.tenant_context(org.tenant):
        vault.secret_set(actor=SYSTEM, name="EXPORT_ME_NOT", value=SECRET_VALUE)
        vault.knowledge_create(actor=SYSTEM, title="Handbook", text="Acme's own words")
        from agents import services as agents

        agents.agent_create(actor=SYSTEM, name="Acme bot", type="worker", cpu="1", memory="1GB")
    with context.tenant_context(other_org.tenant):
        vault.knowledge_create(actor=SYSTEM, title="Globex plans", text="Globex only")

    response = client_for(org, org.owner).get("/deletion/export/")

    assert response.status_code == 200
    assert response["Content-Disposition"].startswith('attachment; filename="acme-export-')
    archive = read_export(response)
    text = json.dumps(archive)
    assert archive["format"] == "agentplane-export/1"
    assert archive["organization"]["slug"] == "acme"
    assert archive["storage_region"] == org.tenant.region
    tables = archive["tables"]
    assert [d["title"] for d in tables["vault.knowledgedocument"]] == ["Handbook"]
    assert tables["vault.knowledgedocument"][0]["text"] == "Acme's own words"
    assert [a["name"] for a in tables["agents.agent"]] == ["Acme bot"]
    assert {u["email"] for u in tables["accounts.user"]} >= {"owner@acme.test"}
    assert "vault.secret" not in tables and "credentials.refreshtoken" not in tables
    assert SECRET_VALUE not in text  # the name appears in the audit log's events; the value never
    assert "Globex" not in text
    assert "password" not in json.dumps(tables["accounts.user"])
    assert all("secret_hash" not in key for key in tables.get("credentials.apikey", []))
    (event,) = log(org.tenant, "organization.exported")
    assert event.details["storage_region"] == org.tenant.region


def test_an_export_outside_the_residency_policy_is_refused(org, client_for, settings):
    with context.public_context():
        Tenant.objects.filter(pk=org.tenant.pk).update(residency_policy="eu", region="eu-west-1")
    settings.EXPORT_REGION = "us-east-1"
    owner = client_for(org, org.owner)

    response = owner.get("/deletion/export/")

    assert response.status_code == 302
    with context.public_context():
        tenant = Tenant.objects.get(pk=org.tenant.pk)
    (refusal,) = log(tenant, "residency.refused")
    assert refusal.details["purpose"] == "export"
    assert log(tenant, "organization.exported") == []
    with pytest.raises(residency.ResidencyViolation):
        services.organization_export(actor=Actor.for_user(org.owner), tenant=tenant)


def test_staff_cancel_a_pending_deletion(org):
    services.organization_deletion_request(
        actor=Actor.for_user(org.owner), tenant=org.tenant, confirm_slug="acme"
    )

    tenant = services.organization_deletion_cancel(actor=STAFF, tenant=org.tenant)

    assert (tenant.status, tenant.deletion_scheduled_for) == (TenantStatus.ACTIVE, None)
    assert len(log(tenant, "organization.deletion_cancelled")) == 1
    with pytest.raises(Exception):  # noqa: B017 (PermissionDenied, recorded)
        services.organization_deletion_cancel(actor=Actor.for_user(org.owner), tenant=tenant)


def test_staff_cancel_from_admin(org, public_client, staff_user):
    services.organization_deletion_request(
        actor=Actor.for_user(org.owner), tenant=org.tenant, confirm_slug="acme"
    )
    with context.public_context():
        public_client.force_login(staff_user)

    response = public_client.post(
        "/admin/tenants/tenant/",
        {"action": "cancel_deletion", "_selected_action": [org.tenant.pk]},
    )

    assert response.status_code == 302
    assert reload(org.tenant).status == TenantStatus.ACTIVE


def dump(schema: str) -> str:
    database = django_settings.DATABASES["default"]
    return subprocess.run(  # noqa: S603
        [
            "pg_dump",
            "-h",
            database["HOST"] or "127.0.0.1",
            "-U",
            database["USER"] or "postgres",
            "-n",
            schema,
            "--data-only",
            database["NAME"],
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout


def test_no_plaintext_secret_or_data_key_in_a_database_dump(scratch_org):
    with context.tenant_context(scratch_org.tenant):
        vault.secret_set(actor=SYSTEM, name="DUMPED", value=SECRET_VALUE)
        vault.knowledge_create(actor=SYSTEM, title="Plain title", text="confidential body text")
        data_key = keystore.data_key(keys.owner(), 1)

    database = django_settings.DATABASES["default"]
    everything = subprocess.run(  # noqa: S603
        [
            "pg_dump",
            "-h",
            database["HOST"] or "127.0.0.1",
            "-U",
            database["USER"] or "postgres",
            database["NAME"],
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout

    assert "DUMPED" in everything and "Plain title" in everything  # the dump is real
    assert SECRET_VALUE not in everything
    assert "confidential body text" not in everything
    for form in (data_key.hex(), base64.b64encode(data_key).decode(), data_key.hex().upper()):
        assert form not in everything


def test_the_purge_destroys_keys_first_and_an_earlier_dump_stays_unreadable(scratch_org):
    tenant = scratch_org.tenant
    owner = str(tenant.public_id)
    with context.tenant_context(tenant):
        secret, _ = vault.secret_set(actor=SYSTEM, name="SHREDDED", value=SECRET_VALUE)
        with connection.cursor() as cursor:
            cursor.execute("SELECT value FROM vault_secret WHERE id = %s", [secret.pk])
            (stolen,) = cursor.fetchone()
        # Readable now, with the platform's keys.
        assert (
            crypto.decrypt(
                stolen, owner=owner, table="vault_secret", row=str(secret.pk), column="value"
            )
            == SECRET_VALUE
        )
    backup = dump(tenant.schema_name)
    assert stolen in backup

    services.organization_deletion_request(
        actor=Actor.for_user(scratch_org.owner), tenant=tenant, confirm_slug=tenant.slug
    )
    with context.public_context():
        Tenant.objects.filter(pk=tenant.pk).update(
            deletion_scheduled_for=timezone.now() - timedelta(seconds=1)
        )
    from django.core.management import call_command

    call_command("purge_organizations")

    with context.public_context():
        assert not Tenant.objects.filter(pk=tenant.pk).exists()
    keystore.reset()
    assert keystore.store().versions(owner=owner) == []
    with pytest.raises(crypto.DataUnreadable):
        crypto.decrypt(
            stolen, owner=owner, table="vault_secret", row=str(secret.pk), column="value"
        )
    platform = [
        e.action
        for e in log(None, "organization.keys_destroyed") + log(None, "organization.deleted")
        if e.resource_id == owner
    ]
    assert platform == ["organization.keys_destroyed", "organization.deleted"]
    keys_event, deleted_event = (
        log(None, "organization.keys_destroyed")[-1],
        log(None, "organization.deleted")[-1],
    )
    assert keys_event.sequence < deleted_event.sequence


def test_a_purge_before_the_date_deletes_nothing(scratch_org):
    services.organization_deletion_request(
        actor=Actor.for_user(scratch_org.owner),
        tenant=scratch_org.tenant,
        confirm_slug=scratch_org.tenant.slug,
    )

    assert services.organizations_purge_due(actor=SYSTEM) == []
    assert reload(scratch_org.tenant).status == TenantStatus.SUSPENDED
    with context.tenant_context(scratch_org.tenant):
        assert Secret.objects.count() == 0

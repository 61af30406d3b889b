"""`secrets:<NAME>`: a tool version granted a secret reads it with `api.secret("NAME")`, in the
run's organization only, each read audited; only admins grant; the value is redacted from what a
run returns and never reaches the audit log or the server's logs."""

from __future__ import annotations

import json
import logging

import pytest
from django.core.exceptions import PermissionDenied

from audit.models import AuditEvent, Result
from core.actors import Actor
from tenants import context
from tenants.models import Plan
from tests.agents.test_api import error, key_client, send
from tests.tools.conftest import make_tool, system
from tools import services
from tools.models import Tool, ToolVersion
from vault import services as vault

VALUE = "sk-live-4f9a1c77e2b0d3aa"  # noqa: S105 (a test value)
THEIR_VALUE = "sk-other-org-99887766"  # noqa: S105
# What the tool can do with the value (the platform cannot see through this: a known limit).
READER = """
async function run(input, api) {
  const value = await api.secret(input.name);
  console.log("token", value);
  return {value, length: value.length, reversed: value.split("").reverse().join("")};
}
"""
THROWER = "async function run(i, api) { throw new Error('bad ' + await api.secret('API_TOKEN')) }"
PROBE = "async function run(i, api) { return await api.secret(i.name).catch(e => e.code) }"


def reversed_(text: str) -> str:
    return text[::-1]


def set_secret(name: str = "API_TOKEN", value: str = VALUE) -> None:
    vault.secret_set(actor=system(), name=name, value=value)


def run(tool, value, actor=None):
    return services.tool_run(actor=actor or system(), tool_id=tool.pk, input=value)


def every_audit_row_text() -> str:
    rows = AuditEvent.objects.values("action", "actor_label", "details", "resource_id")
    return json.dumps(list(rows), default=str)


def test_a_granted_secret_is_read_and_redacted_from_the_result(org, in_tenant, caplog):
    caplog.set_level(logging.DEBUG)
    with in_tenant(org):
        set_secret()
        tool = make_tool("reader", READER, permissions=["secrets:API_TOKEN"])
        result = run(tool, {"name": "API_TOKEN"}, actor=Actor.for_user(org.member))
        read = AuditEvent.objects.get(action="secret.read_by_tool")
        audit_text = every_audit_row_text()
    assert result.status == "ok"
    # The tool had the value (its length and a transform of it came back) ...
    assert result.output["length"] == len(VALUE)
    assert result.output["reversed"] == reversed_(VALUE)
    # ... and the value itself is replaced by the secret's name wherever it left the run.
    assert result.output["value"] == "[secret API_TOKEN]"
    assert result.logs == ["token [secret API_TOKEN]"]
    # Who ran, which tool and version, which secret: never the value.
    assert (read.actor_kind, read.actor_id) == ("user", str(org.member.pk))
    assert read.result == Result.SUCCESS and read.resource_type == "secret"
    assert read.details == {"name": "API_TOKEN", "tool": "reader", "version": 1}
    assert VALUE not in audit_text
    assert VALUE not in caplog.text


def test_the_value_is_redacted_from_errors(org, in_tenant):
    with in_tenant(org):
        set_secret()
        tool = make_tool("thrower", THROWER, permissions=["secrets:API_TOKEN"])
        result = run(tool, {})
    assert result.status == "error"
    assert result.error["message"] == "bad [secret API_TOKEN]"
    assert VALUE not in json.dumps(result.as_dict())


def test_a_secret_not_granted_is_refused_and_the_attempt_recorded(org, in_tenant):
    with in_tenant(org):
        set_secret()
        set_secret("OTHER_TOKEN", "another-value-123456")
        tool = make_tool("probe", PROBE, permissions=["secrets:API_TOKEN"])
        refused = run(tool, {"name": "OTHER_TOKEN"})
        lowercase = run(tool, {"name": "api_token"})
        denied = sorted(
            AuditEvent.objects.filter(action="secret.read_by_tool").values_list(
                "result", "details"
            ),
            key=lambda row: row[1]["name"],
        )
    assert refused.output == "permission_denied"
    assert lowercase.output == "permission_denied"
    assert denied == [
        (Result.DENIED, {"name": "OTHER_TOKEN", "tool": "probe", "version": 1}),
        (Result.DENIED, {"name": "api_token", "tool": "probe", "version": 1}),
    ]


def test_a_tool_without_a_secret_grant_has_no_secret_function(org, in_tenant):
    with in_tenant(org):
        set_secret()
        tool = make_tool(
            "plain", "function run(i, api) { return typeof api.secret }", permissions=["kv:read"]
        )
        result = run(tool, {})
        reads = AuditEvent.objects.filter(action="secret.read_by_tool").count()
    assert result.output == "undefined"
    assert reads == 0


def test_an_unknown_secret_is_refused_on_save(org, in_tenant):
    with in_tenant(org):
        with pytest.raises(Exception) as raised:
            make_tool("reader", READER, permissions=["secrets:NO_SUCH_SECRET"])
        assert not Tool.objects.exists()
    assert raised.value.message_dict["permissions"] == ["No such secret: NO_SUCH_SECRET."]


def test_a_secret_deleted_after_saving_is_not_found_at_run_time(org, in_tenant):
    with in_tenant(org):
        set_secret()
        tool = make_tool("probe", PROBE, permissions=["secrets:API_TOKEN"])
        secret = vault.Secret.objects.get(name="API_TOKEN")
        vault.secret_delete(actor=system(), secret_id=secret.pk)
        result = run(tool, {"name": "API_TOKEN"})
        failed = AuditEvent.objects.get(action="secret.read_by_tool")
    assert result.output == "not_found"
    assert failed.result == Result.FAILED and failed.details["name"] == "API_TOKEN"


def test_another_organizations_secret_of_the_same_name_is_invisible(org, other_org, in_tenant):
    with in_tenant(other_org):
        set_secret(value=THEIR_VALUE)
    with in_tenant(org):
        # Without a secret of that name here, the grant cannot even be saved ...
        with pytest.raises(Exception, match="No such secret"):
            make_tool("reader", READER, permissions=["secrets:API_TOKEN"])
        set_secret()
        tool = make_tool("reader", READER, permissions=["secrets:API_TOKEN"])
        ours = run(tool, {"name": "API_TOKEN"})
    with in_tenant(other_org):
        their_reads = AuditEvent.objects.filter(action="secret.read_by_tool").count()
    # ... and with one, the run reads this organization's value, never the other's.
    assert ours.output["reversed"] == reversed_(VALUE)
    assert their_reads == 0


def test_the_grant_is_filtered_by_the_current_plan(org, in_tenant):
    with in_tenant(org):
        set_secret()
        tool = make_tool("probe", PROBE, permissions=["secrets:API_TOKEN"])
    with context.public_context():
        plan = Plan.objects.get(pk=org.tenant.plan_id)
        allowed = list(plan.allowed_tool_permissions)
        Plan.objects.filter(pk=plan.pk).update(
            allowed_tool_permissions=[name for name in allowed if name != "secrets:*"]
        )
    with in_tenant(org):
        after_downgrade = run(tool, {"name": "API_TOKEN"})  # api.secret is not handed over
        with pytest.raises(Exception, match="Not allowed by your plan: secrets:API_TOKEN"):
            make_tool("again", PROBE, permissions=["secrets:API_TOKEN"])
    assert after_downgrade.status == "error"
    assert "api.secret is not a function" in after_downgrade.error["message"]


def test_only_holders_of_secrets_write_grant_a_secret(org, in_tenant):
    """tools:write without secrets:write (an API key given only that scope) may not save a
    version holding a secret grant: not a new grant, and not new code under an existing one."""
    key_holder = Actor(
        kind="api_key",
        id="k1",
        label="key without secrets:write",
        permissions=frozenset({"tools:write", "tools:read"}),
    )
    with in_tenant(org):
        set_secret()
        with pytest.raises(PermissionDenied):
            services.tool_create(
                actor=key_holder, name="grab", code=READER, permissions=["secrets:API_TOKEN"]
            )
        tool = make_tool("reader", READER, permissions=["secrets:API_TOKEN"])
        with pytest.raises(PermissionDenied):
            services.tool_update(
                actor=key_holder, tool_id=tool.pk, code="function run() { return 1 }"
            )
        # A change that makes no new version (the description) is fine.
        services.tool_update(actor=key_holder, tool_id=tool.pk, description="Reads the token")
        # Dropping the grant in the same save is fine too.
        services.tool_update(actor=key_holder, tool_id=tool.pk, permissions=[], code="//\n")
        versions = list(ToolVersion.objects.values_list("number", "permissions"))
        refusals = sorted(
            AuditEvent.objects.filter(result=Result.DENIED).values_list("action", flat=True)
        )
        names = list(Tool.objects.values_list("name", flat=True))
    assert names == ["reader"]
    assert versions == [(2, []), (1, ["secrets:API_TOKEN"])]
    assert refusals == ["tool.created", "tool.updated"]


def test_permissions_are_validated(org, in_tenant):
    from core import tool_permissions

    with in_tenant(org):
        set_secret()
        plain = tool_permissions.validate_permissions(
            ["secrets:API_TOKEN", "kv:read", "secrets:API_TOKEN"],
            allowed=tool_permissions.PLAN_CATALOGUE,
        )
        too_many = [f"secrets:S{n}" for n in range(tool_permissions.MAX_SECRETS_PER_TOOL + 1)]
        with pytest.raises(Exception, match="At most 20 secrets"):
            tool_permissions.validate_permissions(too_many, allowed=tool_permissions.PLAN_CATALOGUE)
        for bad in ("secrets:lower", "secrets:", "secrets:*", "secrets:A\n"):
            with pytest.raises(Exception, match="Unknown permissions"):
                tool_permissions.validate_permissions(
                    [bad], allowed=tool_permissions.PLAN_CATALOGUE
                )
    assert plain == ["kv:read", "secrets:API_TOKEN"]
    assert tool_permissions.functions_for(plain) == ["kv.read", "secret"]


def test_plans_that_allowed_everything_now_allow_secrets(db):
    """The data migration: a plan with every earlier permission gains secrets:*; a narrowed
    plan does not; and the way back removes it."""
    import importlib

    from django.apps import apps

    migration = importlib.import_module("tenants.migrations.0013_plan_allow_tool_secrets")
    with context.public_context():
        full = Plan.objects.create(
            **_plan_fields("full"),
            allowed_tool_permissions=["config:read", "kv:read", "kv:write", "publish"],
        )
        narrow = Plan.objects.create(**_plan_fields("narrow"), allowed_tool_permissions=["kv:read"])
        migration.allow_secrets(apps, None)
        forward = [Plan.objects.get(pk=p.pk).allowed_tool_permissions for p in (full, narrow)]
        migration.disallow_secrets(apps, None)
        back = Plan.objects.get(pk=full.pk).allowed_tool_permissions
    assert forward == [["config:read", "kv:read", "kv:write", "publish", "secrets:*"], ["kv:read"]]
    assert back == ["config:read", "kv:read", "kv:write", "publish"]


def _plan_fields(slug: str) -> dict:
    return {
        "slug": f"secrets-{slug}",
        "name": slug,
        "max_agents": 1,
        "max_instances": 1,
        "max_cpu_millicores": 1000,
        "max_memory_mb": 1024,
        "max_instance_cpu_millicores": 1000,
        "max_instance_memory_mb": 1024,
        "messages_per_month": 1000,
        "requests_per_minute": 100,
        "audit_retention_days": 30,
        "price_monthly_cents": 0,
    }


# --- API and portal ----------------------------------------------------------------------------


def test_the_api_grants_a_secret_and_runs_with_it(org, client_for, in_tenant):
    with in_tenant(org):
        set_secret()
    client = client_for(org, org.admin)
    created = send(
        client,
        "post",
        "/api/v1/tools/",
        {"name": "reader", "code": READER, "permissions": ["secrets:API_TOKEN"]},
    )
    tool_id = created.json()["id"]
    ran = send(client, "post", f"/api/v1/tools/{tool_id}/runs/", {"input": {"name": "API_TOKEN"}})
    dropped = send(client, "patch", f"/api/v1/tools/{tool_id}/", {"permissions": ["kv:read"]})
    assert created.status_code == 201
    assert created.json()["permissions"] == ["secrets:API_TOKEN"]
    assert ran.status_code == 200
    assert ran.json()["output"]["value"] == "[secret API_TOKEN]"
    assert ran.json()["logs"] == ["token [secret API_TOKEN]"]
    assert VALUE not in ran.content.decode()
    assert dropped.json()["permissions"] == ["kv:read"] and dropped.json()["version"] == 2


@pytest.mark.parametrize(
    ("permissions", "status", "message"),
    [
        # Well-formed but naming no secret of the organization: a conflict with its state.
        (["secrets:NOPE"], 409, "No such secret: NOPE."),
        (["secrets:lower"], 400, "does not match"),
        (["secrets:*"], 400, "does not match"),
        ([f"secrets:S{n}" for n in range(30)], 400, "no more than 24"),
    ],
)
def test_the_api_refuses_bad_secret_permissions(
    org, client_for, in_tenant, permissions, status, message
):
    client = client_for(org, org.admin)
    response = send(
        client, "post", "/api/v1/tools/", {"name": "x", "code": READER, "permissions": permissions}
    )
    assert response.status_code == status
    assert message in json.dumps(error(response)[1]["permissions"])
    with in_tenant(org):
        assert not Tool.objects.exists()


def test_an_api_key_without_secrets_write_cannot_grant(org, client_for, in_tenant):
    with in_tenant(org):
        set_secret()
    client, headers = key_client(org, ["tools:write", "tools:read"], client_for)
    with in_tenant(org):
        before = set(AuditEvent.objects.values_list("pk", flat=True))
    body = {"name": "grab", "code": READER, "permissions": ["secrets:API_TOKEN"]}
    response = send(client, "post", "/api/v1/tools/", body, **headers)
    assert response.status_code == 403
    with in_tenant(org):
        assert not Tool.objects.exists()
        new = AuditEvent.objects.exclude(pk__in=before).exclude(action="api_key.used")
        # The one new event (beside the key's first use) is the recorded refusal.
        assert list(new.values_list("action", "result")) == [("tool.created", Result.DENIED)]


def test_openapi_documents_the_secret_permission(org, client_for):
    schema = json.loads(client_for(org).get("/api/schema/?format=json").content)
    items = schema["components"]["schemas"]["ToolInputRequest"]["properties"]["permissions"]
    assert "secrets:" in items["items"]["pattern"]
    assert "secrets:write" in items["description"]


def test_the_editor_offers_secrets_and_saves_a_grant(org, client_for, in_tenant):
    with in_tenant(org):
        set_secret()
    client = client_for(org, org.admin)
    page = client.get("/tools/new/").content.decode()
    form = {
        "name": "reader",
        "description": "",
        "code": READER,
        "input_schema": "{}",
        "timeout_ms": "1000",
        "memory_mb": "16",
        "permissions": ["secrets:API_TOKEN"],
    }
    saved = client.post("/tools/new/", form)
    with in_tenant(org):
        tool = Tool.objects.get(name="reader")
        version = tool.versions.get()
    viewer_page = client_for(org, org.viewer).get(f"/tools/{tool.pk}/").content.decode()
    ran = client.post(f"/tools/{tool.pk}/run/", {"input": '{"name": "API_TOKEN"}'})
    assert 'value="secrets:API_TOKEN"' in page
    assert saved.status_code == 302
    assert version.permissions == ["secrets:API_TOKEN"]
    assert "secrets:API_TOKEN" in viewer_page  # a viewer sees the grant (not secrets' names)
    assert ran.status_code == 200
    html = ran.content.decode()
    assert "[secret API_TOKEN]" in html and VALUE not in html

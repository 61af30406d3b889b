"""Portal pages of tools: list, editor (syntax errors on save), Test run, delete; roles and
other organizations; staff admin."""

from __future__ import annotations

import json

import pytest

from tests.tools.conftest import SCHEMA, make_tool
from tools.models import Tool, ToolVersion

FORM = {
    "name": "greet",
    "description": "Says hello",
    "code": "function run(input) { console.log('hello'); return 'Hello, ' + input.name }",
    "input_schema": json.dumps(SCHEMA),
    "timeout_ms": "1000",
    "memory_mb": "16",
    "permissions": ["kv:read"],
}


def test_the_list_shows_the_organizations_tools(org, client_for, in_tenant):
    with in_tenant(org):
        make_tool("alpha", description="First")
    page = client_for(org, org.viewer).get("/tools/")
    assert page.status_code == 200
    html = page.content.decode()
    assert 'data-tool="alpha"' in html and "First" in html
    assert "New tool" not in html  # a viewer cannot write
    assert 'href="/tools/"' in html  # the navigation has the section


def test_create_then_edit_makes_versions(org, client_for, in_tenant):
    client = client_for(org, org.admin)
    created = client.post("/tools/new/", FORM)
    with in_tenant(org):
        tool = Tool.objects.get(name="greet")
    assert created.status_code == 302 and created["Location"] == f"/tools/{tool.pk}/"
    edited = client.post(f"/tools/{tool.pk}/", {**FORM, "code": FORM["code"] + "\n// v2"})
    assert edited.status_code == 302
    with in_tenant(org):
        assert list(tool.versions.values_list("number", flat=True)) == [2, 1]
    page = client.get(f"/tools/{tool.pk}/").content.decode()
    assert "version 2" in page and "Test run" in page


def test_a_syntax_error_is_shown_on_save_and_nothing_is_saved(org, client_for, in_tenant):
    response = client_for(org, org.admin).post(
        "/tools/new/", {**FORM, "code": "function run(input) {\n  return [1, 2\n}"}
    )
    assert response.status_code == 400
    html = response.content.decode()
    assert "SyntaxError" in html
    with in_tenant(org):
        assert not Tool.objects.exists()


def test_bad_json_schema_is_shown_on_save(org, client_for):
    response = client_for(org, org.admin).post("/tools/new/", {**FORM, "input_schema": "{"})
    assert response.status_code == 400
    assert "Not valid JSON" in response.content.decode()


def test_test_run_shows_output_logs_and_errors(org, client_for, in_tenant):
    with in_tenant(org):
        tool = make_tool("greet", FORM["code"], input_schema=SCHEMA)
    client = client_for(org, org.member)
    ok = client.post(f"/tools/{tool.pk}/run/", {"input": '{"name": "Ada"}'}).content.decode()
    invalid = client.post(f"/tools/{tool.pk}/run/", {"input": '{"name": 1}'}).content.decode()
    not_json = client.post(f"/tools/{tool.pk}/run/", {"input": "{"})
    assert 'data-run-status="ok"' in ok and "Hello, Ada" in ok and "hello" in ok
    assert 'data-run-status="invalid_input"' in invalid
    assert not_json.status_code == 400


@pytest.mark.parametrize(
    ("role", "view", "run", "save"),
    [
        ("viewer", 200, 403, 403),
        ("member", 200, 200, 403),
        ("admin", 200, 200, 302),
    ],
)
def test_role_matrix(org, client_for, in_tenant, role, view, run, save):
    with in_tenant(org):
        tool = make_tool("greet")
    client = client_for(org, org.user(role))
    assert client.get(f"/tools/{tool.pk}/").status_code == view
    assert client.post(f"/tools/{tool.pk}/run/", {"input": "{}"}).status_code == run
    assert client.post(f"/tools/{tool.pk}/", FORM).status_code == save


def test_anonymous_visitors_are_sent_to_sign_in(org, client_for):
    response = client_for(org).get("/tools/")
    assert response.status_code == 302 and "/login/" in response["Location"]


def test_another_organization_gets_404_on_every_page(org, other_org, client_for, in_tenant):
    with in_tenant(org):
        tool = make_tool("greet")
    attacker = client_for(other_org, other_org.owner)
    assert attacker.get(f"/tools/{tool.pk}/").status_code == 404
    assert attacker.post(f"/tools/{tool.pk}/", FORM).status_code == 404
    assert attacker.post(f"/tools/{tool.pk}/run/", {"input": "{}"}).status_code == 404
    assert attacker.post(f"/tools/{tool.pk}/delete/").status_code == 404
    assert "greet" not in attacker.get("/tools/").content.decode()
    with in_tenant(org):
        assert Tool.objects.filter(pk=tool.pk).exists()
        assert ToolVersion.objects.filter(tool=tool).count() == 1


def test_delete(org, client_for, in_tenant):
    with in_tenant(org):
        tool = make_tool("greet")
    response = client_for(org, org.admin).post(f"/tools/{tool.pk}/delete/")
    assert response.status_code == 302
    with in_tenant(org):
        assert not Tool.objects.exists()


def test_staff_admin_has_no_tenant_tools_and_sets_plan_limits(staff_user, public_client, org):
    public_client.force_login(staff_user)
    assert public_client.get("/admin/tools/").status_code == 404
    plan_page = public_client.get(f"/admin/tenants/plan/{org.tenant.plan_id}/change/")
    assert plan_page.status_code == 200
    html = plan_page.content.decode()
    for field in ("tool_max_timeout_ms", "tool_max_memory_mb", "tool_concurrency"):
        assert f'name="{field}"' in html


def test_tenant_hosts_do_not_serve_admin_tool_pages(org, client_for):
    assert client_for(org, org.owner).get("/admin/tools/").status_code == 404

"""Portal pages: agents, instances, the pool bars and config, with errors in place and roles."""

from __future__ import annotations

import re
import uuid

import pytest
from django.contrib.messages import get_messages

from agents import services
from agents.models import Agent, AgentInstance, ConfigKey, ResourcePool
from agents.resources import format_cpu
from tests.agents.conftest import make_agent, system


def text(response) -> str:
    return response.content.decode()


def meter(response, name: str) -> tuple[int, int]:
    match = re.search(
        rf'data-meter="{name}" data-used="(\d+)" data-limit="(\d+)"', response.content.decode()
    )
    assert match, f"no {name} meter"
    return int(match[1]), int(match[2])


def flashes(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


AGENT_FORM = {
    "name": "Triage",
    "type": "assistant",
    "description": "Sorts tickets.",
    "cpu": "0.5",
    "memory": "1GB",
    "permissions": ["messages:read"],
    "tools": "search, http.get",
    "config": '{"model": "large"}',
}


# --- Pages render ------------------------------------------------------------------------------


def test_the_agents_section_is_in_the_navigation_for_readers(org, client_for):
    page = client_for(org, org.viewer).get("/agents/")

    assert page.status_code == 200
    assert [item["label"] for item in page.context["navigation"]][:5] == [
        "Dashboard",
        "Members",
        "Agents",
        "Resources",
        "Config",
    ]
    assert "New agent" not in text(page)  # viewers read only


def test_the_list_shows_the_pool_bars_and_the_agents(org, client_for, in_tenant):
    with in_tenant(org):
        agent = make_agent("Indexer", cpu="1", memory="2GB")
        services.instance_request(actor=system(), agent_id=agent.pk)

    page = client_for(org, org.member).get("/agents/")

    assert page.status_code == 200
    assert 'data-agent="Indexer"' in text(page)
    assert meter(page, "cpu") == (1000, 32000)
    assert meter(page, "memory")[1] == 65536
    assert meter(page, "messages") == (0, 5_000_000)
    assert "New agent" in text(page)
    with in_tenant(org):
        agent.refresh_from_db()
    # Times in UTC like everywhere on the portal, never "0 minutes ago".
    assert f"{agent.updated_at:%Y-%m-%d %H:%M} UTC" in text(page) and " ago" not in text(page)


def test_filters_search_and_pagination(org, client_for, in_tenant):
    with in_tenant(org):
        for number in range(23):
            make_agent(f"Bulk {number:02}", type="worker" if number % 2 else "router")
        running = make_agent("Runner one", type="router")
        services.instance_request(actor=system(), agent_id=running.pk)
    client = client_for(org, org.viewer)

    first = client.get("/agents/", {"q": "bulk"})
    second = client.get("/agents/", {"q": "bulk", "page": 2})
    routers = client.get("/agents/", {"type": "router"})
    pending = client.get("/agents/", {"status": "pending"})

    assert first.context["page"].paginator.count == 23
    assert len(first.context["page"].object_list) == 20
    assert [a.name for a in second.context["page"].object_list] == ["Bulk 20", "Bulk 21", "Bulk 22"]
    assert 'href="?q=bulk&amp;page=2"' in text(first)
    assert {a.type for a in routers.context["page"].object_list} == {"router"}
    assert routers.context["page"].paginator.count == 13
    assert [a.name for a in pending.context["page"].object_list] == ["Runner one"]


def test_the_list_runs_a_fixed_number_of_queries(
    org, client_for, in_tenant, django_assert_num_queries
):
    client = client_for(org, org.viewer)
    with in_tenant(org):
        for number in range(5):
            agent = make_agent(f"Counted {number}")
            services.instance_request(actor=system(), agent_id=agent.pk)
    client.get("/agents/")  # warm the session and routing caches

    # session, user, pool row, the month's messages (billing's ledger, one aggregate), types,
    # count, page (the limits: from the routing cache).
    with django_assert_num_queries(7):
        assert len(client.get("/agents/").context["page"].object_list) == 5
    with in_tenant(org):
        for number in range(10):
            make_agent(f"More {number}")
    client.get("/agents/")  # the same connection state before each measured request
    with django_assert_num_queries(7):
        assert len(client.get("/agents/").context["page"].object_list) == 15


def test_an_unknown_status_filter_is_ignored(org, client_for):
    page = client_for(org, org.viewer).get("/agents/", {"status": "exploded"})

    assert page.status_code == 200 and page.context["filters"]["status"] == ""


# --- Create and edit -----------------------------------------------------------------------


def test_creating_an_agent(org, client_for, in_tenant):
    response = client_for(org, org.member).post("/agents/new/", AGENT_FORM)

    with in_tenant(org):
        agent = Agent.objects.get(name="Triage")
    assert response.status_code == 302
    assert response["Location"] == f"/agents/{agent.pk}/"
    assert (agent.type, agent.cpu_millicores, agent.memory_mb) == ("assistant", 500, 1024)
    assert (agent.permissions, agent.tools, agent.config) == (
        ["messages:read"],
        ["search", "http.get"],
        {"model": "large"},
    )


def test_errors_are_shown_next_to_their_fields_and_nothing_is_created(org, client_for, in_tenant):
    with in_tenant(org):
        before = Agent.objects.count()

    response = client_for(org, org.member).post(
        "/agents/new/",
        {
            **AGENT_FORM,
            "type": "Bad Type",
            "cpu": "lots",
            "memory": "0GB",
            "permissions": ["messages:read", "agents:spawn"],
            "config": '{"model": ',
        },
    )

    assert response.status_code == 400
    errors = response.context["form"].errors
    assert set(errors) == {"cpu", "memory", "type", "permissions", "config"}
    assert errors["permissions"] == ["Not allowed by your plan: agents:spawn."]
    assert errors["config"] == ["Not valid JSON: Expecting value (line 1, column 10)."]
    assert errors["memory"] == ["Must be more than zero."]
    html = text(response)
    assert 'class="field has-error"' in html
    assert "“lots” is not a CPU amount" in html
    assert 'value="Triage"' in html  # what was typed is kept
    with in_tenant(org):
        assert Agent.objects.count() == before


def test_the_form_says_which_permissions_the_plan_allows(org, client_for):
    page = client_for(org, org.member).get("/agents/new/")

    rows = {row["name"]: row["is_allowed"] for row in page.context["permission_rows"]}
    assert rows["agents:spawn"] is False and rows["http:outbound"] is True
    assert "up to 4 CPU and 16GB per instance" in text(page)


def test_editing_an_agent(org, client_for, in_tenant):
    with in_tenant(org):
        agent = make_agent("Editable", config={"a": 1})
    client = client_for(org, org.member)

    form = client.get(f"/agents/{agent.pk}/edit/")
    response = client.post(
        f"/agents/{agent.pk}/edit/", {**AGENT_FORM, "name": "Edited", "cpu": "250m"}
    )

    assert form.status_code == 200
    assert form.context["form"].initial["cpu"] == "500m"
    assert response.status_code == 302
    with in_tenant(org):
        edited = Agent.objects.get(pk=agent.pk)
    assert (edited.name, edited.cpu_millicores, edited.config) == (
        "Edited",
        250,
        {"model": "large"},
    )


def test_the_quota_on_agents_is_shown_on_the_form(org, client_for, in_tenant):
    with in_tenant(org):
        in_use = ResourcePool.objects.get(pk=1).agents
    services.organization_limits_set(
        actor=system(), tenant=org.tenant, overrides={"max_agents": in_use}
    )

    response = client_for(org, org.member).post("/agents/new/", AGENT_FORM)

    assert response.status_code == 400
    assert response.context["form"].non_field_errors() == [
        f"The organization has {in_use} of {in_use} agents."
    ]


# --- Detail, instances ---------------------------------------------------------------------


def test_starting_and_stopping_instances_moves_the_bars(org, client_for, in_tenant):
    with in_tenant(org):
        agent = make_agent("Mover", cpu="1", memory="1GB")
    client = client_for(org, org.member)
    before = meter(client.get(f"/agents/{agent.pk}/"), "cpu")[0]

    started = client.post(f"/agents/{agent.pk}/instances/", follow=True)
    client.post(f"/agents/{agent.pk}/instances/")
    two = client.get(f"/agents/{agent.pk}/")
    with in_tenant(org):
        instance = AgentInstance.objects.filter(agent=agent).first()
    stopped = client.post(f"/agents/{agent.pk}/instances/{instance.pk}/stop/", follow=True)

    assert flashes(started) == ["Instance requested."]
    assert meter(two, "cpu")[0] == before + 2000
    assert text(two).count("data-stop-instance") == 2
    assert meter(stopped, "cpu")[0] == before + 1000
    assert text(stopped).count("data-stop-instance") == 1
    assert "Instance stopped" in text(stopped)


def test_a_full_pool_is_explained_on_the_page(org, client_for, in_tenant):
    with in_tenant(org):
        agent = make_agent("Hungry", cpu="1")
        used = ResourcePool.objects.get(pk=1).cpu_millicores
    services.organization_limits_set(
        actor=system(), tenant=org.tenant, overrides={"max_cpu_millicores": used + 500}
    )

    response = client_for(org, org.member).post(f"/agents/{agent.pk}/instances/", follow=True)

    assert flashes(response) == [
        f"Instance not started: Not enough CPU: 1 requested, 500m free of {format_cpu(used + 500)}."
    ]


def test_the_detail_shows_the_resolved_config_and_where_each_value_came_from(
    org, client_for, in_tenant, django_capture_on_commit_callbacks
):
    services.platform_config_default_set(
        actor=system(), key="agents.defaults", value={"model": "small", "retries": 1}
    )
    with in_tenant(org), django_capture_on_commit_callbacks(execute=True):
        services.config_set(actor=system(), key="agents.defaults", value={"model": "medium"})
        services.config_set(actor=system(), key="agents.router", value={"fanout": 3})
    with in_tenant(org):
        agent = make_agent("Resolved", type="router", config={"fanout": 5, "tone": "dry"})

    page = client_for(org, org.viewer).get(f"/agents/{agent.pk}/")

    assert page.context["resolution"].value == {
        "model": "medium",
        "retries": 1,
        "fanout": 5,
        "tone": "dry",
    }
    html = text(page)
    for pointer, source in [
        ("/model", "organization:agents.defaults"),
        ("/retries", "platform:agents.defaults"),
        ("/fanout", "definition"),
        ("/tone", "definition"),
    ]:
        assert f'data-pointer="{pointer}" data-source="{source}"' in html


def test_deleting_an_agent_from_the_portal(org, client_for, in_tenant):
    with in_tenant(org):
        agent = make_agent("Gone")

    response = client_for(org, org.member).post(f"/agents/{agent.pk}/delete/")

    assert response.status_code == 302 and response["Location"] == "/agents/"
    with in_tenant(org):
        assert not Agent.objects.filter(pk=agent.pk).exists()


def test_the_resources_page(org, client_for):
    page = client_for(org, org.viewer).get("/resources/")

    assert page.status_code == 200
    assert [m.name for m in page.context["pool"].meters] == [
        "agents",
        "instances",
        "cpu",
        "memory",
        "messages",
    ]
    assert "<dt>CPU</dt><dd>4</dd>" in text(page)


# --- Config --------------------------------------------------------------------------------


def test_setting_a_key_from_the_config_page(org, client_for, in_tenant):
    response = client_for(org, org.admin).post(
        "/config/", {"key": "agents.worker", "value": '{\n  "timeout": 30\n}'}
    )

    assert response.status_code == 302
    assert response["Location"] == "/config/?key=agents.worker"
    with in_tenant(org):
        assert ConfigKey.objects.get(key="agents.worker").value == {"timeout": 30}


@pytest.mark.parametrize(
    ("key", "value", "field", "message"),
    [
        (
            "agents.worker",
            '{"a": }',
            "value",
            "Not valid JSON: Expecting value (line 1, column 7).",
        ),
        ("agents.worker", "[1, 2]", "value", "Must be a JSON object."),
        ("Agents", "1", "key", "Keys are 1 to 8 dot-separated segments"),
        ("big.value", '"' + "x" * 70_000 + '"', "value", "70002 bytes; the limit is 65536"),
    ],
)
def test_config_errors_are_shown_in_place(org, client_for, in_tenant, key, value, field, message):
    response = client_for(org, org.admin).post("/config/", {"key": key, "value": value})

    assert response.status_code == 400
    assert response.context["form"].errors[field][0].startswith(message)
    assert 'class="field has-error"' in text(response)
    with in_tenant(org):
        assert not ConfigKey.objects.filter(key=key).exists()


def test_the_config_page_edits_an_existing_key_and_resolves_a_type(org, client_for, in_tenant):
    with in_tenant(org):
        services.config_set(actor=system(), key="agents.router", value={"fanout": 2})

    page = client_for(org, org.viewer).get("/config/", {"key": "agents.router", "type": "router"})

    assert page.context["form"].initial == {"key": "agents.router", "value": '{\n  "fanout": 2\n}'}
    assert 'data-key="agents.router"' in text(page)
    assert "Set a key" not in text(page) and "Edit agents.router" not in text(page)  # read only


def test_deleting_a_key(org, client_for, in_tenant):
    with in_tenant(org):
        services.config_set(actor=system(), key="feature.x", value=1)

    response = client_for(org, org.owner).post("/config/delete/", {"key": "feature.x"})
    missing = client_for(org, org.owner).post("/config/delete/", {"key": "feature.x"})

    assert response.status_code == 302 and missing.status_code == 404


# --- Roles and other organizations ---------------------------------------------------------


# Every portal endpoint as (method, path); `{agent}` and `{instance}` are filled in per test.
PORTAL_ENDPOINTS = [
    ("GET", "/agents/"),
    ("GET", "/resources/"),
    ("GET", "/agents/{agent}/"),
    ("GET", "/config/"),
    ("GET", "/agents/new/"),
    ("POST", "/agents/new/"),
    ("GET", "/agents/{agent}/edit/"),
    ("POST", "/agents/{agent}/edit/"),
    ("POST", "/agents/{agent}/instances/"),
    ("POST", "/agents/{agent}/instances/{instance}/stop/"),
    ("POST", "/config/"),
    ("POST", "/agents/{agent}/delete/"),
]
PORTAL_DATA = {
    ("POST", "/agents/new/"): {**AGENT_FORM, "name": "Role test"},
    ("POST", "/agents/{agent}/edit/"): {**AGENT_FORM, "name": "Renamed"},
    ("POST", "/config/"): {"key": "feature.x", "value": "1"},
}


def portal_calls(agent, instance):
    """(method, path, data) of every portal endpoint, for this agent and instance."""
    return [
        (
            method,
            path.format(agent=agent.pk, instance=instance.pk),
            PORTAL_DATA.get((method, path), {}),
        )
        for method, path in PORTAL_ENDPOINTS
    ]


def portal_state():
    """What the agents pages write in the organization's schema."""
    return (
        sorted(Agent.objects.values_list("id", "name", "updated_at")),
        sorted(AgentInstance.objects.values_list("id", "status")),
        ResourcePool.objects.get(pk=1).instances,
        sorted(ConfigKey.objects.values_list("key", "version")),
    )


@pytest.mark.parametrize(
    ("role", "method", "path", "status"),
    [
        # Pages to read: every role of the organization; agents:read / config:read. Anonymous
        # visitors are sent to the login page (302).
        ("anonymous", "GET", "/agents/", 302),
        ("viewer", "GET", "/agents/", 200),
        ("member", "GET", "/agents/", 200),
        ("admin", "GET", "/agents/", 200),
        ("owner", "GET", "/agents/", 200),
        ("anonymous", "GET", "/resources/", 302),
        ("viewer", "GET", "/resources/", 200),
        ("member", "GET", "/resources/", 200),
        ("admin", "GET", "/resources/", 200),
        ("owner", "GET", "/resources/", 200),
        ("anonymous", "GET", "/agents/{agent}/", 302),
        ("viewer", "GET", "/agents/{agent}/", 200),
        ("member", "GET", "/agents/{agent}/", 200),
        ("admin", "GET", "/agents/{agent}/", 200),
        ("owner", "GET", "/agents/{agent}/", 200),
        ("anonymous", "GET", "/config/", 302),
        ("viewer", "GET", "/config/", 200),
        ("member", "GET", "/config/", 200),
        ("admin", "GET", "/config/", 200),
        ("owner", "GET", "/config/", 200),
        # Agent and instance writes: members and up; agents:write. A done write redirects (302).
        ("anonymous", "GET", "/agents/new/", 302),
        ("viewer", "GET", "/agents/new/", 403),
        ("member", "GET", "/agents/new/", 200),
        ("admin", "GET", "/agents/new/", 200),
        ("owner", "GET", "/agents/new/", 200),
        ("anonymous", "POST", "/agents/new/", 302),
        ("viewer", "POST", "/agents/new/", 403),
        ("member", "POST", "/agents/new/", 302),
        ("admin", "POST", "/agents/new/", 302),
        ("owner", "POST", "/agents/new/", 302),
        ("anonymous", "GET", "/agents/{agent}/edit/", 302),
        ("viewer", "GET", "/agents/{agent}/edit/", 403),
        ("member", "GET", "/agents/{agent}/edit/", 200),
        ("admin", "GET", "/agents/{agent}/edit/", 200),
        ("owner", "GET", "/agents/{agent}/edit/", 200),
        ("anonymous", "POST", "/agents/{agent}/edit/", 302),
        ("viewer", "POST", "/agents/{agent}/edit/", 403),
        ("member", "POST", "/agents/{agent}/edit/", 302),
        ("admin", "POST", "/agents/{agent}/edit/", 302),
        ("owner", "POST", "/agents/{agent}/edit/", 302),
        ("anonymous", "POST", "/agents/{agent}/instances/", 302),
        ("viewer", "POST", "/agents/{agent}/instances/", 403),
        ("member", "POST", "/agents/{agent}/instances/", 302),
        ("admin", "POST", "/agents/{agent}/instances/", 302),
        ("owner", "POST", "/agents/{agent}/instances/", 302),
        ("anonymous", "POST", "/agents/{agent}/instances/{instance}/stop/", 302),
        ("viewer", "POST", "/agents/{agent}/instances/{instance}/stop/", 403),
        ("member", "POST", "/agents/{agent}/instances/{instance}/stop/", 302),
        ("admin", "POST", "/agents/{agent}/instances/{instance}/stop/", 302),
        ("owner", "POST", "/agents/{agent}/instances/{instance}/stop/", 302),
        ("anonymous", "POST", "/agents/{agent}/delete/", 302),
        ("viewer", "POST", "/agents/{agent}/delete/", 403),
        ("member", "POST", "/agents/{agent}/delete/", 302),
        ("admin", "POST", "/agents/{agent}/delete/", 302),
        ("owner", "POST", "/agents/{agent}/delete/", 302),
        # Config writes: admins and owners; config:write.
        ("anonymous", "POST", "/config/", 302),
        ("viewer", "POST", "/config/", 403),
        ("member", "POST", "/config/", 403),
        ("admin", "POST", "/config/", 302),
        ("owner", "POST", "/config/", 302),
    ],
)
def test_portal_role_matrix(
    org, client_for, in_tenant, django_capture_on_commit_callbacks, role, method, path, status
):
    with in_tenant(org):
        agent = make_agent("Guarded")
        instance = services.instance_request(actor=system(), agent_id=agent.pk)
        before = portal_state()
    client = client_for(org, None if role == "anonymous" else org.user(role))

    with django_capture_on_commit_callbacks() as callbacks:
        response = getattr(client, method.lower())(
            path.format(agent=agent.pk, instance=instance.pk), PORTAL_DATA.get((method, path), {})
        )

    assert response.status_code == status
    if role == "anonymous" or status == 403:
        if role == "anonymous":
            assert response["Location"].startswith("/login/")
        assert callbacks == []
        with in_tenant(org):
            assert portal_state() == before


def test_another_organization_gets_404_for_every_agent_page(org, other_org, client_for, in_tenant):
    with in_tenant(org):
        agent = make_agent("Acme secret")
        instance = services.instance_request(actor=system(), agent_id=agent.pk)
        before = (
            sorted(Agent.objects.values_list("id", "name")),
            sorted(AgentInstance.objects.values_list("id", "status")),
            ResourcePool.objects.get(pk=1).instances,
        )
    intruder = client_for(other_org, other_org.owner)

    for method, path, data in portal_calls(agent, instance):
        if str(agent.pk) not in path:
            continue
        response = getattr(intruder, method.lower())(path, data)
        assert response.status_code == 404, (path, response.status_code)

    listing = intruder.get("/agents/", {"q": "Acme secret"})
    assert listing.context["page"].paginator.count == 0
    assert "Acme secret" not in text(intruder.get("/agents/"))
    with in_tenant(org):
        after = (
            sorted(Agent.objects.values_list("id", "name")),
            sorted(AgentInstance.objects.values_list("id", "status")),
            ResourcePool.objects.get(pk=1).instances,
        )
    assert after == before


def test_another_organizations_config_is_never_shown(org, other_org, client_for, in_tenant):
    with in_tenant(org):
        services.config_set(actor=system(), key="acme.secret", value="hunter2")

    page = client_for(other_org, other_org.owner).get("/config/", {"key": "acme.secret"})

    assert page.status_code == 200
    assert "hunter2" not in text(page) and page.context["editing"] is None


def test_a_made_up_agent_id_is_404(org, client_for):
    client = client_for(org, org.owner)

    assert client.get(f"/agents/{uuid.uuid4()}/").status_code == 404
    assert client.get("/agents/not-a-uuid/").status_code == 404


@pytest.mark.parametrize(
    "query",
    [{"type": "defaults"}, {"type": "Bad\x00"}, {"q": "a\x00b"}, {"status": "\x00"}, {"page": "x"}],
)
def test_hostile_list_parameters_are_harmless(org, client_for, query):
    assert client_for(org, org.viewer).get("/agents/", query).status_code == 200


def test_hostile_config_keys_are_harmless(org, client_for):
    client = client_for(org, org.admin)

    assert client.get("/config/", {"key": "a\x00b", "type": "x\x00"}).status_code == 200
    assert client.post("/config/delete/", {"key": "a\x00b"}).status_code == 404
    refused = client.post("/config/", {"key": "agents.worker", "value": '{"a": "\\u0000"}'})
    assert refused.status_code == 400
    assert refused.context["form"].errors["value"] == ["Text may not contain the NUL character."]

"""The agent page's scaling card and the policy page: what each role sees and may change."""

from __future__ import annotations

import uuid

import pytest

from autoscaler import services
from autoscaler.models import ScalingPolicy
from core.actors import Actor
from tests.agents.conftest import make_agent, system
from tests.audit.conftest import events_after, head
from tests.autoscaler.conftest import POLICY, running_agent


def form_data(**changes) -> dict[str, str]:
    """The policy form as a browser posts it: empty strings for unset thresholds, no checkbox
    when off."""
    data = {name: "" if value is None else str(value) for name, value in POLICY.items()}
    data["is_enabled"] = "on"
    for name, value in changes.items():
        if value is None:
            data.pop(name, None)
        else:
            data[name] = value
    return data


def text(response) -> str:
    return response.content.decode()


def test_the_card_shows_the_policy_the_state_and_the_last_decisions(org, client_for, in_tenant):
    with in_tenant(org):
        agent, _ = running_agent("Hot", instances=2, cpu=[90, 90, 90])
        services.agent_autoscale(actor=Actor.system("autoscaler"), agent=agent)

    page = text(client_for(org, org.viewer).get(f"/agents/{agent.pk}/"))

    assert 'data-live-region="scaling"' in page and 'data-live-subjects="scaling.>"' in page
    assert 'data-scaling-enabled="true"' in page
    assert "Between 1 and 5 instances" in page
    assert 'CPU <span class="muted">(%)</span>: up at 75, down at 25' in page
    assert "<strong>Now:</strong> 3 instances (1 pending)." in page
    assert "&uarr; Up 2 &rarr; 3" in page and "CPU 90% or more (≥ 75) for 3 min" in page
    assert "Scaled up to 3." in page
    assert "Edit policy" not in page  # viewers read only


def test_a_full_pool_shows_what_was_wanted(org, client_for, in_tenant):
    from tests.agents.test_services import limit

    with in_tenant(org):
        agent, _ = running_agent("Stuck", instances=2, cpu=[90, 90, 90])
        limit(org, max_instances=2)
        services.agent_autoscale(actor=Actor.system("autoscaler"), agent=agent)

    page = text(client_for(org, org.admin).get(f"/agents/{agent.pk}/"))

    assert '&uarr; Up 2 &rarr; 2</strong> <span class="badge badge-warning">wanted 3</span>' in page
    assert "Refused by the pool" in page
    assert f'href="/agents/{agent.pk}/scaling/"' in page  # admins edit


def test_an_agent_without_a_policy_shows_the_disabled_defaults(org, client_for, in_tenant):
    with in_tenant(org):
        agent = make_agent("Plain")
    page = text(client_for(org, org.admin).get(f"/agents/{agent.pk}/"))
    assert 'data-scaling-enabled="false"' in page and "Autoscaling is off." in page
    assert "No decision yet. Turn autoscaling on with Edit policy." in page


def test_an_admin_saves_a_policy_from_the_form(org, client_for, in_tenant):
    with in_tenant(org):
        agent = make_agent("Tuned")
    client = client_for(org, org.admin)
    assert client.get(f"/agents/{agent.pk}/scaling/").status_code == 200

    response = client.post(
        f"/agents/{agent.pk}/scaling/",
        form_data(max_instances="8", memory_up="80", memory_down="20"),
    )

    assert response.status_code == 302 and response["Location"] == f"/agents/{agent.pk}/"
    with in_tenant(org):
        stored = ScalingPolicy.objects.get(agent=agent)
        assert (stored.is_enabled, stored.max_instances, stored.memory_up) == (True, 8, 80.0)
        assert (stored.response_up, stored.response_down) == (None, None)


def test_the_form_shows_the_services_errors_in_place(org, client_for, in_tenant):
    with in_tenant(org):
        agent = make_agent("Tuned")
        start = head()

    response = client_for(org, org.admin).post(
        f"/agents/{agent.pk}/scaling/", form_data(cpu_down="90", queue_down="", max_instances="0")
    )

    assert response.status_code == 400
    errors = response.context["form"].errors
    assert set(errors) == {"max_instances"}  # the form's own check first
    response = client_for(org, org.admin).post(
        f"/agents/{agent.pk}/scaling/", form_data(cpu_down="90", queue_down="")
    )
    assert response.status_code == 400
    assert response.context["form"].errors == {
        "cpu_down": ["Below the scale-up threshold."],
        "queue_down": ["Set both thresholds, or neither."],
    }
    assert "There are 2 problems" in text(response)
    with in_tenant(org):
        assert not ScalingPolicy.objects.exists() and events_after(start) == []


@pytest.mark.parametrize(
    ("role", "status"), [("viewer", 403), ("member", 403), ("admin", 302), ("owner", 302)]
)
def test_role_matrix_for_the_policy_page(org, client_for, in_tenant, role, status):
    with in_tenant(org):
        agent = make_agent("Matrix")
        start = head()
    client = client_for(org, org.user(role))

    assert client.get(f"/agents/{agent.pk}/scaling/").status_code == (403 if status == 403 else 200)
    response = client.post(f"/agents/{agent.pk}/scaling/", form_data())

    assert response.status_code == status
    with in_tenant(org):
        assert ScalingPolicy.objects.filter(agent=agent).exists() is (status == 302)
        if status == 403:
            assert events_after(start) == []


def test_anonymous_visitors_sign_in_first(org, client_for, in_tenant):
    with in_tenant(org):
        agent = make_agent("Matrix")
    response = client_for(org).post(f"/agents/{agent.pk}/scaling/", form_data())
    assert response.status_code == 302 and "/login/" in response["Location"]


def test_another_organizations_agent_is_a_404(org, other_org, client_for, in_tenant):
    with in_tenant(org):
        agent = make_agent("Acme only")
        services.policy_set(actor=system(), agent_id=agent.pk, **POLICY)
    intruder = client_for(other_org, other_org.owner)
    for path in (f"/agents/{agent.pk}/scaling/", f"/agents/{uuid.uuid4()}/scaling/"):
        assert intruder.get(path).status_code == 404
        assert intruder.post(path, form_data(max_instances="2")).status_code == 404
    with in_tenant(org):
        assert ScalingPolicy.objects.get(agent=agent).max_instances == 5

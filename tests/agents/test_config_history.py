"""Config keys have their own versions, a history with diffs, and rollback (a new version,
audited); the list searches and pages. Another organization's keys are never reachable."""

from __future__ import annotations

import pytest

from agents import services
from agents.models import ConfigKey, ConfigVersion
from audit.models import AuditEvent
from core.actors import Actor


def set_key(org, in_tenant, key, value, user=None):
    with in_tenant(org):
        return services.config_set(actor=Actor.for_user(user or org.admin), key=key, value=value)


def test_each_key_counts_its_own_versions(org, client_for, in_tenant):
    set_key(org, in_tenant, "feature.other", 1)
    set_key(org, in_tenant, "feature.other", 2)
    client = client_for(org, org.admin)

    first = client.post("/config/", {"key": "agents.worker", "value": '{"a": 1}'}, follow=True)
    second = client.post("/config/", {"key": "agents.worker", "value": '{"a": 2}'}, follow=True)

    assert "Saved agents.worker (version 1)." in first.text
    assert "Saved agents.worker (version 2)." in second.text
    with in_tenant(org):
        assert list(
            ConfigVersion.objects.filter(key="agents.worker").values_list("number", "value")
        ) == [(2, {"a": 2}), (1, {"a": 1})]
    rows = {row["entry"].key: row["key_version"] for row in second.context["entries"]}
    assert rows == {"agents.worker": 2, "feature.other": 2}


def test_the_history_shows_each_version_with_its_diff(org, client_for, in_tenant):
    set_key(org, in_tenant, "agents.worker", {"model": "small", "timeout": 30})
    set_key(org, in_tenant, "agents.worker", {"model": "large", "timeout": 30})
    with in_tenant(org):
        services.config_delete(actor=Actor.for_user(org.admin), key="agents.worker")

    page = client_for(org, org.viewer).get("/config/history/?key=agents.worker")

    assert page.status_code == 200
    rows = page.context["rows"]
    assert [row["version"].number for row in rows] == [3, 2, 1]
    assert rows[0]["version"].value is None and not rows[0]["is_current"]
    changed = [(line["kind"], line["text"]) for line in rows[1]["diff"]]
    assert ("removed", '-  "model": "small",') in changed
    assert ("added", '+  "model": "large",') in changed
    assert "Roll back to this" not in page.text  # a viewer reads, never writes


def test_rolling_back_saves_a_new_version_and_is_audited(org, client_for, in_tenant):
    set_key(org, in_tenant, "agents.worker", {"model": "small"})
    set_key(org, in_tenant, "agents.worker", {"model": "large"})
    client = client_for(org, org.admin)

    response = client.post("/config/rollback/", {"key": "agents.worker", "number": "1"})

    assert response.status_code == 302
    assert response["Location"] == "/config/history/?key=agents.worker"
    with in_tenant(org):
        assert ConfigKey.objects.get(key="agents.worker").value == {"model": "small"}
        newest = ConfigVersion.objects.filter(key="agents.worker").first()
        assert (newest.number, newest.value, newest.restored_from) == (3, {"model": "small"}, 1)
        event = AuditEvent.objects.filter(action="config.changed").order_by("-sequence").first()
    assert event.actor_label == org.admin.email
    assert (event.details["key_version"], event.details["restored_from"]) == (3, 1)


@pytest.mark.parametrize(
    ("user", "data", "status"),
    [
        ("viewer", {"key": "agents.worker", "number": "1"}, 403),
        ("member", {"key": "agents.worker", "number": "1"}, 403),
        ("admin", {"key": "agents.worker", "number": "9"}, 404),
        ("admin", {"key": "agents.worker", "number": "0"}, 404),
        ("admin", {"key": "agents.worker", "number": "x"}, 404),
        ("admin", {"key": "agents.worker", "number": "3"}, 404),  # the deletion
        ("admin", {"key": "Not A Key", "number": "1"}, 404),
    ],
)
def test_a_refused_rollback_changes_nothing(org, client_for, in_tenant, user, data, status):
    set_key(org, in_tenant, "agents.worker", {"model": "small"})
    set_key(org, in_tenant, "agents.worker", {"model": "large"})
    with in_tenant(org):
        services.config_delete(actor=Actor.for_user(org.admin), key="agents.worker")
        before = ConfigVersion.objects.count()

    response = client_for(org, org.user(user)).post("/config/rollback/", data)

    assert response.status_code == status
    with in_tenant(org):
        assert ConfigVersion.objects.count() == before
        assert not ConfigKey.objects.filter(key="agents.worker").exists()


def test_another_organizations_history_and_rollback_are_not_found(
    org, other_org, client_for, in_tenant
):
    set_key(other_org, in_tenant, "agents.secret", {"token_budget": 9})
    set_key(other_org, in_tenant, "agents.secret", {"token_budget": 10})
    client = client_for(org, org.owner)

    assert client.get("/config/history/?key=agents.secret").status_code == 404
    assert (
        client.post("/config/rollback/", {"key": "agents.secret", "number": "1"}).status_code == 404
    )
    with in_tenant(other_org):
        assert ConfigKey.objects.get(key="agents.secret").value == {"token_budget": 10}
        assert ConfigVersion.objects.filter(key="agents.secret").count() == 2
    with in_tenant(org):
        assert not ConfigVersion.objects.filter(key="agents.secret").exists()


def test_the_key_list_searches_and_pages(org, client_for, in_tenant):
    for index in range(30):
        set_key(org, in_tenant, f"feature.flag{index:02d}", index)
    set_key(org, in_tenant, "agents.worker", {"a": 1})
    client = client_for(org, org.viewer)

    first = client.get("/config/")
    second = client.get("/config/?page=2")
    found = client.get("/config/?q=worker")

    assert len(first.context["entries"]) == 25 and first.context["total_keys"] == 31
    assert len(second.context["entries"]) == 6
    assert [row["entry"].key for row in found.context["entries"]] == ["agents.worker"]
    assert "1 of 31" in found.text

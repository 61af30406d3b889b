"""Staff read the platform's audit log in Django admin, and can change nothing in it."""

from __future__ import annotations

import pytest

from audit import services
from audit.models import AuditEvent
from core.actors import Actor
from tenants import context


@pytest.fixture
def staff_client(public_client, staff_user):
    with context.public_context():
        public_client.force_login(staff_user)
    return public_client


@pytest.fixture
def platform_event(db):
    with context.public_context():
        return services.record(
            actor=Actor.system("tests"),
            action="test.platform-visible",
            resource_type="organization",
            details={"slug": "acme"},
        )


def test_staff_list_the_platform_log(staff_client, platform_event, org, in_tenant):
    with in_tenant(org):
        services.record(actor=Actor.system("tests"), action="test.tenant-only")

    response = staff_client.get("/admin/audit/auditevent/")

    assert response.status_code == 200
    page = response.content.decode()
    assert "test.platform-visible" in page and "test.tenant-only" not in page
    assert "/admin/audit/auditevent/add/" not in page


def test_staff_read_an_event_without_a_save_button(staff_client, platform_event):
    response = staff_client.get(f"/admin/audit/auditevent/{platform_event.pk}/change/")

    page = response.content.decode()
    assert response.status_code == 200
    assert platform_event.hash in page and "&quot;slug&quot;: &quot;acme&quot;" in page
    assert 'name="_save"' not in page


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/admin/audit/auditevent/add/"),
        ("post", "/admin/audit/auditevent/add/"),
        ("post", "/admin/audit/auditevent/{pk}/change/"),
        ("get", "/admin/audit/auditevent/{pk}/delete/"),
        ("post", "/admin/audit/auditevent/{pk}/delete/"),
    ],
)
def test_nobody_adds_changes_or_deletes(staff_client, platform_event, method, path):
    url = path.format(pk=platform_event.pk)

    response = getattr(staff_client, method)(url, {"action": "forged", "post": "yes"})

    assert response.status_code == 403
    with context.public_context():
        assert AuditEvent.objects.get(pk=platform_event.pk).action == "test.platform-visible"


def test_bulk_actions_are_gone(staff_client, platform_event):
    response = staff_client.post(
        "/admin/audit/auditevent/",
        {"action": "delete_selected", "_selected_action": [platform_event.pk]},
    )

    assert response.status_code in (200, 302)
    with context.public_context():
        assert AuditEvent.objects.filter(pk=platform_event.pk).exists()

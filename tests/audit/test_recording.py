"""Every existing service records exactly one event per change, with the right actor and result.

A refused change records a `denied` event and changes nothing. Staff actions on an organization
are recorded in the platform's log and in the organization's own.
"""

from __future__ import annotations

import pytest
from django.core.exceptions import PermissionDenied, ValidationError

from accounts import services as accounts
from accounts.models import Invitation, User
from audit.models import AuditEvent
from audit.verify import verify_chain
from core.actors import Actor
from organizations import services as tenants
from tenants import context
from tenants.models import Plan, Tenant
from tests.audit.conftest import events_after, head
from tests.conftest import PASSWORD


def summary(events: list[AuditEvent]) -> list[tuple]:
    return [(e.action, e.result, e.actor_kind, e.actor_label) for e in events]


def platform_head() -> int:
    with context.public_context():
        return head()


def platform_events_after(sequence: int) -> list[AuditEvent]:
    with context.public_context():
        return events_after(sequence)


# --- accounts.services ---------------------------------------------------------------------------


def test_user_create(acme):
    start = head()

    user = accounts.user_create(
        actor=Actor.for_user(acme.owner), email="new@acme.test", password=PASSWORD, role="member"
    )

    [event] = events_after(start)
    assert summary([event]) == [("member.created", "success", "user", "owner@acme.test")]
    assert (event.resource_type, event.resource_id) == ("user", str(user.pk))
    assert event.details == {"email": "new@acme.test", "role": "member"}
    assert PASSWORD not in str(event.details)


def test_user_create_refused_for_bad_input_records_nothing(acme):
    start, users = head(), User.objects.count()

    with pytest.raises(ValidationError):
        accounts.user_create(
            actor=Actor.for_user(acme.owner),
            email="admin@acme.test",
            password=PASSWORD,
            role="member",
        )

    assert (head(), User.objects.count()) == (start, users)


def test_invitation_lifecycle_one_event_each(acme):
    owner = Actor.for_user(acme.owner)
    start = head()

    invitation, token = accounts.invitation_create(
        actor=owner, email="inv@acme.test", role="viewer"
    )
    accounts.invitation_revoke(actor=owner, invitation_id=invitation.pk)
    again, token = accounts.invitation_create(actor=owner, email="inv@acme.test", role="viewer")
    accounts.invitation_accept(
        actor=Actor.anonymous(), token=token, password=PASSWORD, full_name="In V"
    )

    events = events_after(start)
    assert summary(events) == [
        ("invitation.created", "success", "user", "owner@acme.test"),
        ("invitation.revoked", "success", "user", "owner@acme.test"),
        ("invitation.created", "success", "user", "owner@acme.test"),
        # Accepting is two changes: a user is created, the invitation is used up.
        ("member.created", "success", "anonymous", "anonymous"),
        ("invitation.accepted", "success", "anonymous", "anonymous"),
    ]
    assert token not in str([e.details for e in events])


@pytest.mark.parametrize("role", ["viewer", "member"])
def test_refused_invitation_is_recorded_and_changes_nothing(acme, role):
    start, invitations = head(), Invitation.objects.count()

    with pytest.raises(PermissionDenied):
        accounts.invitation_create(
            actor=Actor.for_user(acme.user(role)), email="x@acme.test", role="viewer"
        )

    assert Invitation.objects.count() == invitations
    assert summary(events_after(start)) == [
        ("invitation.created", "denied", "user", acme.user(role).email)
    ]


def test_role_change_and_deactivation(acme):
    owner = Actor.for_user(acme.owner)
    start = head()

    accounts.member_change_role(actor=owner, user_id=acme.member.pk, role="admin")
    accounts.member_change_role(actor=owner, user_id=acme.member.pk, role="admin")  # no change
    accounts.member_deactivate(actor=owner, user_id=acme.viewer.pk)

    events = events_after(start)
    assert summary(events) == [
        ("member.role_changed", "success", "user", "owner@acme.test"),
        ("member.deactivated", "success", "user", "owner@acme.test"),
    ]
    assert events[0].details == {"email": "member@acme.test", "from": "member", "to": "admin"}
    assert (events[1].resource_type, events[1].resource_id) == ("user", str(acme.viewer.pk))


@pytest.mark.parametrize(
    ("role", "target", "call"),
    [
        ("viewer", "member", "deactivate"),
        ("member", "viewer", "role"),
        ("admin", "owner", "deactivate"),
        ("admin", "member", "owner"),
    ],
)
def test_refused_member_changes_are_recorded_and_change_nothing(acme, role, target, call):
    actor = Actor.for_user(acme.user(role))
    user = acme.user(target)
    start = head()

    with pytest.raises(PermissionDenied):
        if call == "deactivate":
            accounts.member_deactivate(actor=actor, user_id=user.pk)
        else:
            accounts.member_change_role(
                actor=actor, user_id=user.pk, role="owner" if call == "owner" else "admin"
            )

    after = User.objects.get(pk=user.pk)
    assert (after.role, after.is_active) == (user.role, True)
    [event] = events_after(start)
    assert (event.result, event.actor_label, event.resource_id) == (
        "denied",
        acme.user(role).email,
        str(user.pk),
    )
    assert event.action == ("member.deactivated" if call == "deactivate" else "member.role_changed")


def test_staff_user_create_is_in_the_platform_log(db):
    start = platform_head()

    accounts.staff_user_create(
        actor=Actor.system("tests"), email="Ops@Platform.test", password=PASSWORD
    )

    [event] = platform_events_after(start)
    assert (event.action, event.tenant_id, event.details) == (
        "staff.created",
        "platform",
        {"email": "ops@platform.test"},
    )


# --- organizations.services (staff) --------------------------------------------------------------


@pytest.fixture
def staff(staff_user) -> Actor:
    return Actor.for_user(staff_user)


def test_provisioning_records_in_both_logs(db, staff):
    start = platform_head()

    tenant = tenants.provision_tenant(
        actor=staff,
        slug="initech",
        name="Initech",
        owner_email="owner@initech.test",
        owner_password=PASSWORD,
        plan_slug="team",
    )

    assert summary(platform_events_after(start)) == [
        ("organization.created", "success", "staff", "staff@platform.test")
    ]
    with context.tenant_context(tenant):
        events = events_after(0)
        assert summary(events) == [
            ("member.created", "success", "staff", "staff@platform.test"),
            ("organization.created", "success", "staff", "staff@platform.test"),
        ]
        assert {e.tenant_id for e in events} == {str(tenant.public_id)}
        assert PASSWORD not in str([e.details for e in events])
        assert verify_chain(tenant_id=str(tenant.public_id)).is_intact


def test_suspend_and_reactivate_are_in_both_logs(org, staff):
    start, org_start = platform_head(), None
    with context.tenant_context(org.tenant):
        org_start = head()

    tenants.tenant_suspend(actor=staff, tenant=org.tenant, reason="tests")
    tenants.tenant_suspend(
        actor=staff, tenant=org.tenant, reason="tests"
    )  # already suspended: no change
    tenants.tenant_reactivate(actor=staff, tenant=org.tenant)

    expected = [
        ("organization.suspended", "success", "staff", "staff@platform.test"),
        ("organization.reactivated", "success", "staff", "staff@platform.test"),
    ]
    assert summary(platform_events_after(start)) == expected
    with context.tenant_context(org.tenant):
        assert summary(events_after(org_start)) == expected


def test_update_and_plan_changes_are_recorded(org, staff):
    start = platform_head()
    with context.tenant_context(org.tenant):
        org_start = head()
    with context.public_context():
        enterprise = Plan.objects.get(slug="enterprise")

    tenants.tenant_update(actor=staff, tenant=org.tenant, name="Acme Corp", plan=enterprise)

    [event] = platform_events_after(start)
    assert (event.action, event.details) == (
        "organization.updated",
        {
            "name": {"from": "Acme Inc", "to": "Acme Corp"},
            "plan": {"from": "team", "to": "enterprise"},
        },
    )
    with context.tenant_context(org.tenant):
        assert [e.action for e in events_after(org_start)] == ["organization.updated"]


def test_delete_is_recorded_in_the_platform_log(db, staff):
    tenant = tenants.provision_tenant(
        actor=staff,
        slug="doomed",
        name="Doomed",
        owner_email="owner@doomed.test",
        owner_password=PASSWORD,
    )
    start = platform_head()

    tenants.tenant_delete(actor=staff, tenant=tenant)

    # Its data keys are destroyed first (crypto-shredding), then its schema.
    keys_destroyed, event = platform_events_after(start)
    assert (keys_destroyed.action, keys_destroyed.resource_id) == (
        "organization.keys_destroyed",
        str(tenant.public_id),
    )
    assert (event.action, event.actor_label, event.resource_id) == (
        "organization.deleted",
        "staff@platform.test",
        str(tenant.public_id),
    )
    with context.public_context():
        assert not Tenant.objects.filter(pk=tenant.pk).exists()

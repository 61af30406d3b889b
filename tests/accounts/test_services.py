"""Invitations, role changes and deactivation: the rules, and that refusals change nothing."""

from datetime import timedelta

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.utils import timezone

from accounts import services
from accounts.models import Invitation, User
from audit.models import AuditEvent
from core.actors import Actor
from tests.conftest import PASSWORD


def last_event():
    return AuditEvent.objects.order_by("-sequence").first()


@pytest.mark.parametrize("role", ["admin", "owner"])
def test_admins_and_owners_invite(acme, role, django_capture_on_commit_callbacks):
    actor = Actor.for_user(acme.user(role))

    with django_capture_on_commit_callbacks() as callbacks:
        invitation, token = services.invitation_create(
            actor=actor, email=" New@Acme.test ", role="member"
        )

    assert (invitation.email, invitation.role, invitation.is_pending) == (
        "new@acme.test",
        "member",
        True,
    )
    assert (
        invitation.token_hash == services.hash_token(token) and token not in invitation.token_hash
    )
    assert invitation.expires_at - invitation.created_at == timedelta(days=7)
    event = last_event()
    assert (event.action, event.actor_label, event.result) == (
        "invitation.created",
        acme.user(role).email,
        "success",
    )
    assert token not in str(event.details)
    assert len(callbacks) == 1  # the change event, published after commit


@pytest.mark.parametrize("role", ["viewer", "member"])
def test_viewers_and_members_cannot_invite(acme, role):
    before = Invitation.objects.count()

    with pytest.raises(PermissionDenied):
        services.invitation_create(
            actor=Actor.for_user(acme.user(role)), email="x@acme.test", role="viewer"
        )

    assert Invitation.objects.count() == before
    event = last_event()
    assert (event.action, event.result) == ("invitation.created", "denied")


def test_only_an_owner_grants_owner(acme):
    with pytest.raises(PermissionDenied):
        services.invitation_create(
            actor=Actor.for_user(acme.admin), email="boss@acme.test", role="owner"
        )
    with pytest.raises(PermissionDenied):
        services.member_change_role(
            actor=Actor.for_user(acme.admin), user_id=acme.member.pk, role="owner"
        )
    assert User.objects.get(pk=acme.member.pk).role == "member"

    services.member_change_role(
        actor=Actor.for_user(acme.owner), user_id=acme.member.pk, role="owner"
    )
    assert User.objects.get(pk=acme.member.pk).role == "owner"


def test_invitation_accept_creates_the_member_once(acme):
    _, token = services.invitation_create(
        actor=Actor.for_user(acme.admin), email="joiner@acme.test", role="viewer"
    )

    user = services.invitation_accept(
        actor=Actor.anonymous(), token=token, password=PASSWORD, full_name="Joiner"
    )

    assert (user.email, user.role, user.full_name) == ("joiner@acme.test", "viewer", "Joiner")
    with pytest.raises(ValidationError):
        services.invitation_accept(actor=Actor.anonymous(), token=token, password=PASSWORD)
    assert User.objects.filter(email="joiner@acme.test").count() == 1


def test_an_expired_invitation_is_refused(acme):
    invitation, token = services.invitation_create(
        actor=Actor.for_user(acme.admin), email="late@acme.test", role="viewer"
    )
    Invitation.objects.filter(pk=invitation.pk).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )

    with pytest.raises(ValidationError):
        services.invitation_accept(actor=Actor.anonymous(), token=token, password=PASSWORD)
    assert not User.objects.filter(email="late@acme.test").exists()


def test_an_invitation_works_only_in_its_own_organization(org, other_org, in_tenant):
    with in_tenant(org):
        _, token = services.invitation_create(
            actor=Actor.for_user(org.admin), email="spy@acme.test", role="admin"
        )
    with in_tenant(other_org):
        with pytest.raises(ValidationError):
            services.invitation_accept(actor=Actor.anonymous(), token=token, password=PASSWORD)
        assert not User.objects.filter(email="spy@acme.test").exists()


@pytest.mark.parametrize(
    ("actor_role", "target_role"),
    [
        ("viewer", "member"),
        ("member", "viewer"),
        ("admin", "owner"),
    ],
)
def test_refused_role_changes_change_nothing(acme, actor_role, target_role):
    target = acme.user(target_role)

    with pytest.raises(PermissionDenied):
        services.member_change_role(
            actor=Actor.for_user(acme.user(actor_role)), user_id=target.pk, role="admin"
        )
    with pytest.raises(PermissionDenied):
        services.member_deactivate(actor=Actor.for_user(acme.user(actor_role)), user_id=target.pk)

    target.refresh_from_db()
    assert (target.role, target.is_active) == (target_role, True)
    assert last_event().result == "denied"


def test_nobody_changes_their_own_membership(acme):
    with pytest.raises(PermissionDenied):
        services.member_change_role(
            actor=Actor.for_user(acme.owner), user_id=acme.owner.pk, role="viewer"
        )
    with pytest.raises(PermissionDenied):
        services.member_deactivate(actor=Actor.for_user(acme.admin), user_id=acme.admin.pk)


def test_the_last_owner_is_kept(acme):
    second = services.user_create(
        actor=Actor.system(), email="second@acme.test", password=PASSWORD, role="owner"
    )
    services.member_deactivate(actor=Actor.for_user(second), user_id=acme.owner.pk)

    with pytest.raises(ValidationError):
        services.member_change_role(actor=Actor.system(), user_id=second.pk, role="admin")
    with pytest.raises(ValidationError):
        services.member_deactivate(actor=Actor.system(), user_id=second.pk)
    assert list(AuditEvent.objects.order_by("-sequence").values_list("action", "result")[:2]) == [
        ("member.deactivated", "failed"),
        ("member.role_changed", "failed"),
    ]
    assert User.objects.get(pk=second.pk).role == "owner"


def test_admin_changes_roles_and_deactivates(acme):
    actor = Actor.for_user(acme.admin)

    services.member_change_role(actor=actor, user_id=acme.viewer.pk, role="member")
    services.member_deactivate(actor=actor, user_id=acme.member.pk)

    assert User.objects.get(pk=acme.viewer.pk).role == "member"
    assert User.objects.get(pk=acme.member.pk).is_active is False
    assert list(AuditEvent.objects.order_by("-sequence").values_list("action", flat=True)[:2]) == [
        "member.deactivated",
        "member.role_changed",
    ]


def test_another_organizations_member_id_is_not_found(org, other_org, in_tenant):
    with in_tenant(org):
        acme_member_id = org.member.pk
    with in_tenant(other_org):
        globex_ids = set(User.objects.values_list("pk", flat=True))
        missing = max(globex_ids) + 1000
        with pytest.raises(User.DoesNotExist):
            services.member_deactivate(actor=Actor.for_user(other_org.admin), user_id=missing)
    # Ids repeat across schemas: acme's member id in globex is globex's own row, never acme's.
    with in_tenant(org):
        assert User.objects.get(pk=acme_member_id).is_active is True

"""manage.py audit_retention: per organization, by its plan, verifiable afterwards."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from audit import retention, services
from audit.models import AuditCheckpoint, AuditEvent
from audit.verify import verify_chain
from core.actors import Actor
from tests.audit.conftest import backdate


def test_retention_follows_each_organizations_plan(org, other_org, in_tenant, capsys):
    # Both organizations are on "team" (365 days). Acme's log is 400 days old, Globex's 100.
    with in_tenant(org):
        backdate(400)
        acme_count = AuditEvent.objects.count()
        acme_last = AuditEvent.objects.order_by("-sequence").first()
    with in_tenant(other_org):
        backdate(100)
        globex_count = AuditEvent.objects.count()

    call_command("audit_retention")

    out = capsys.readouterr().out
    assert f"acme: kept 365 days, removed {acme_count} events (through #{acme_count})." in out
    assert "globex: kept 365 days, removed 0 events." in out
    with in_tenant(org):
        [event] = AuditEvent.objects.all()
        assert (event.action, event.actor_label) == (
            "audit.retention_applied",
            "manage.py audit_retention",
        )
        assert AuditCheckpoint.objects.get().hash == acme_last.hash
        report = verify_chain(tenant_id=str(org.tenant.public_id))
        assert report.is_intact and report.checkpoint_sequence == acme_count
    with in_tenant(other_org):
        assert AuditEvent.objects.count() == globex_count + 1
        assert verify_chain(tenant_id=str(other_org.tenant.public_id)).is_intact


def test_retention_for_one_organization(org, other_org, in_tenant, capsys):
    call_command("audit_retention", "--tenant", "globex")

    assert capsys.readouterr().out.startswith("globex: kept 365 days, removed 0 events.")
    with in_tenant(org):
        assert not AuditEvent.objects.filter(action="audit.retention_applied").exists()


def test_retention_twice_keeps_the_chain_verifiable(org, in_tenant):
    with in_tenant(org):
        backdate(400)
        retention.audit_retention_apply(actor=Actor.system("tests"), retention_days=365)
        services.record(actor=Actor.system("tests"), action="test.between")
        later = timezone.now() + timedelta(days=400)

        result = retention.audit_retention_apply(
            actor=Actor.system("tests"), retention_days=365, now=later
        )

        assert result.removed == 2
        assert AuditCheckpoint.objects.count() == 2
        report = verify_chain(tenant_id=str(org.tenant.public_id))
        assert report.is_intact and report.checked == 1


def test_retention_refuses_an_unknown_organization(db):
    with pytest.raises(CommandError, match="No organization with the slug “nope”"):
        call_command("audit_retention", "--tenant", "nope")

"""`manage.py audit_retention`: remove events older than each organization's plan keeps."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from audit import retention
from core.actors import Actor
from tenants import context
from tenants.models import TenantStatus


class Command(BaseCommand):
    help = (
        "Apply each organization's audit retention (its plan's audit_retention_days): remove older "
        "events, keep a checkpoint so the chain stays verifiable, and record the run."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--tenant", metavar="SLUG", help="Only this organization.")

    def handle(self, *args, **options) -> None:
        actor = Actor.system("manage.py audit_retention")
        statuses = [TenantStatus.ACTIVE, TenantStatus.SUSPENDED]
        visited = 0
        for tenant in context.each_tenant(statuses=statuses, slug=options["tenant"]):
            visited += 1
            days = tenant.plan.audit_retention_days
            result = retention.audit_retention_apply(actor=actor, retention_days=days)
            through = f" (through #{result.through_sequence})" if result.through_sequence else ""
            self.stdout.write(
                f"{tenant.slug}: kept {days} days, removed {result.removed} events{through}."
            )
        if options["tenant"] and not visited:
            raise CommandError(f"No organization with the slug “{options['tenant']}”.")

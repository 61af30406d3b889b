"""`manage.py audit_retention`: remove events older than each organization's plan keeps."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from audit import retention
from core.actors import Actor
from tenants import context
from tenants.models import Tenant, TenantStatus


class Command(BaseCommand):
    help = (
        "Apply each organization's audit retention (its plan's audit_retention_days): remove older "
        "events, keep a checkpoint so the chain stays verifiable, and record the run."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--tenant", metavar="SLUG", help="Only this organization.")

    def handle(self, *args, **options) -> None:
        actor = Actor.system("manage.py audit_retention")
        with context.public_context():
            tenants = Tenant.objects.select_related("plan").exclude(status=TenantStatus.DELETING)
            if options["tenant"]:
                tenants = tenants.filter(slug=options["tenant"])
            tenants = list(tenants.exclude(schema_name="public").order_by("slug"))
        if options["tenant"] and not tenants:
            raise CommandError(f"No organization with the slug “{options['tenant']}”.")
        for tenant in tenants:
            days = tenant.plan.audit_retention_days
            with context.tenant_context(tenant):
                result = retention.audit_retention_apply(actor=actor, retention_days=days)
            through = f" (through #{result.through_sequence})" if result.through_sequence else ""
            self.stdout.write(
                f"{tenant.slug}: kept {days} days, removed {result.removed} events{through}."
            )

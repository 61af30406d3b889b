"""`manage.py data_retention`: apply the retention of each data class in every organization."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from core.actors import Actor
from tenants import context
from tenants.models import TenantStatus
from vault import retention


class Command(BaseCommand):
    help = (
        "Delete knowledge documents older than their class's retention (DATA_RETENTION_DAYS: "
        "general, confidential, restricted), in every organization or one; each run is audited."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--tenant", metavar="SLUG", help="Only this organization.")

    def handle(self, *args, **options) -> None:
        actor = Actor.system("manage.py data_retention")
        statuses = [TenantStatus.ACTIVE, TenantStatus.SUSPENDED]
        visited = 0
        for tenant in context.each_tenant(statuses=statuses, slug=options["tenant"]):
            visited += 1
            removed = retention.data_retention_apply(actor=actor)
            summary = ", ".join(f"{name} {count}" for name, count in removed.items()) or "none"
            self.stdout.write(f"{tenant.slug}: removed {summary}.")
        if options["tenant"] and not visited:
            raise CommandError(f"No organization with the slug “{options['tenant']}”.")

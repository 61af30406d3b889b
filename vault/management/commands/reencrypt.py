"""`manage.py reencrypt`: finish (or resume) data key rotations whose re-encryption stopped."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from tenants import context
from tenants.models import TenantStatus
from vault import keys, services


class Command(BaseCommand):
    help = (
        "Re-encrypt the rows of every organization with an unfinished data key rotation (a "
        "worker that was killed, a server restarted). Safe to run at any time, also twice."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--tenant", metavar="SLUG", help="Only this organization.")

    def handle(self, *args, **options) -> None:
        statuses = [TenantStatus.ACTIVE, TenantStatus.SUSPENDED]
        visited = 0
        for tenant in context.each_tenant(statuses=statuses, slug=options["tenant"]):
            visited += 1
            state = keys.state()
            if not state.is_rotating:
                continue
            self.stdout.write(
                f"{tenant.slug}: v{state.active_version}, {state.rows_done} of "
                f"{state.rows_total} rows done; resuming"
            )
            if services.reencrypt_run():
                self.stdout.write(f"{tenant.slug}: finished ({keys.state().rows_total} rows).")
            else:
                self.stdout.write(f"{tenant.slug}: another worker is re-encrypting it.")
        if options["tenant"] and not visited:
            raise CommandError(f"No organization with the slug “{options['tenant']}”.")

"""`manage.py audit_flush_failures`: summarise closed failure windows into each log (cron: every
minute). Idempotent; safe to run while requests record failures."""

from __future__ import annotations

from django.core.management.base import BaseCommand

from audit import failures
from tenants import context
from tenants.models import TenantStatus


class Command(BaseCommand):
    help = (
        "Write the summary rows of closed failure windows (bad credentials, failed sign-ins) "
        "into each organization's audit log and the platform's."
    )

    def handle(self, *args, **options) -> None:
        total = 0
        with context.public_context():
            total += failures.failures_flush(batches=None)
        statuses = [TenantStatus.ACTIVE, TenantStatus.SUSPENDED]
        for tenant in context.each_tenant(statuses=statuses):
            written = failures.failures_flush(batches=None)
            if written:
                self.stdout.write(f"{tenant.slug}: {written} summary row(s)")
            total += written
        self.stdout.write(f"{total} summary row(s) written")

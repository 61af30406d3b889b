"""`manage.py seal_audit [--every SECONDS] [--tenant SLUG]`: chain every unsealed audit event."""

from __future__ import annotations

import time

from django.core.management.base import BaseCommand
from django.db import DatabaseError

from audit import sealing
from tenants import context
from tenants.models import TenantStatus


class Command(BaseCommand):
    help = (
        "Seal (chain) the audit events recorded but not yet sealed, in the platform's log and "
        "every organization's. Once, or every SECONDS as a backstop beside the in-process sealer "
        "(required when AUDIT_SEALER=off)."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--every", type=float, metavar="SECONDS", help="Repeat forever.")
        parser.add_argument("--tenant", metavar="SLUG", help="Only this organization's log.")

    def handle(self, *args, **options) -> None:
        while True:
            try:
                sealed = self.seal_all(options["tenant"])
            except DatabaseError as error:  # PostgreSQL restarting: try again next time
                if options["every"] is None:
                    raise
                self.stderr.write(f"sealing failed: {error}")
                sealed = 0
            if options["every"] is None:
                self.stdout.write(f"{sealed} events sealed.")
                return
            if sealed:
                self.stdout.write(f"{sealed} events sealed.")
            time.sleep(options["every"])

    def seal_all(self, slug: str | None) -> int:
        sealed = 0
        if slug is None:
            sealed += sealing.seal_in(None)
        statuses = [choice.value for choice in TenantStatus]
        for tenant in context.each_tenant(statuses=statuses, slug=slug):
            sealed += sealing.seal_in(tenant)
        return sealed

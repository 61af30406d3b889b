"""`manage.py autoscale`: evaluate every enabled scaling policy of every active organization."""

from __future__ import annotations

import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from autoscaler import services
from core.actors import Actor
from tenants import context
from tenants.models import TenantStatus


class Command(BaseCommand):
    help = "Scale agents by their policies: one pass (--once, the default) or every N seconds."

    def add_arguments(self, parser: Any) -> None:
        group = parser.add_mutually_exclusive_group()
        group.add_argument("--once", action="store_true", help="One pass, then exit (default).")
        group.add_argument("--every", type=float, default=0, help="A pass every N seconds.")
        parser.add_argument("--org", default=None, help="Only this organization (its slug).")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["every"] < 0:
            raise CommandError("--every takes a positive number of seconds.")
        actor = Actor.system("autoscaler")
        while True:
            for tenant in context.each_tenant(statuses=[TenantStatus.ACTIVE], slug=options["org"]):
                for decision in services.organization_autoscale(actor=actor):
                    self.stdout.write(
                        f"{tenant.slug}: {decision.agent.name} {decision.direction} "
                        f"{decision.from_count} -> {decision.to_count}: {decision.outcome} "
                        f"({decision.reason})"
                    )
            if not options["every"]:
                return
            time.sleep(options["every"])

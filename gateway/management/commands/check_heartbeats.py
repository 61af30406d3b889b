"""Mark failed the running instances whose heartbeats stopped, in every active organization."""

from __future__ import annotations

import time
from typing import Any

from django.core.management.base import BaseCommand

from core.actors import Actor
from gateway import services
from tenants import context
from tenants.models import TenantStatus


class Command(BaseCommand):
    help = "Fail instances silent for longer than GATEWAY_HEARTBEAT_TIMEOUT (once, or --every N)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--timeout", type=int, default=None, help="Seconds (default: setting).")
        parser.add_argument("--every", type=float, default=0, help="Repeat every N seconds.")

    def handle(self, *args: Any, **options: Any) -> None:
        actor = Actor.system("heartbeat-check")
        while True:
            for tenant in context.each_tenant(statuses=[TenantStatus.ACTIVE]):
                failed = services.instances_fail_stale(
                    actor=actor, timeout_seconds=options["timeout"]
                )
                for instance_id in failed:
                    self.stdout.write(f"{tenant.slug}: {instance_id} failed (no heartbeat)")
            if not options["every"]:
                return
            time.sleep(options["every"])

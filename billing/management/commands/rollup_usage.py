"""Move usage counted in Redis into PostgreSQL (idempotent; run it every few seconds to minutes)."""

from __future__ import annotations

import time

from django.core.management.base import BaseCommand

from billing import services
from core.actors import Actor


class Command(BaseCommand):
    help = "Roll the usage ledger's hourly counters up from Redis into PostgreSQL."

    def add_arguments(self, parser):
        parser.add_argument(
            "--include-current",
            action="store_true",
            help="Also flush the current hour (what a crash of Redis could otherwise lose).",
        )
        parser.add_argument(
            "--every", type=float, default=0, help="Repeat every N seconds (0: run once)."
        )

    def handle(self, *args, include_current: bool = False, every: float = 0, **options):
        actor = Actor.system("rollup_usage")
        while True:
            result = services.rollup(actor=actor, include_current=include_current)
            self.stdout.write(
                f"rolled up {result.hashes} hourly hashes ({result.counters} counters); "
                f"{result.skipped} already rolled up"
            )
            if not every:
                return
            time.sleep(every)

"""`manage.py refill_schema_pool`: build pre-migrated spare schemas (run after each deploy)."""

from __future__ import annotations

from django.conf import settings
from django.core.management.base import BaseCommand

from tenants import schema_pool


class Command(BaseCommand):
    help = "Drop spare schemas built with other migrations and build new ones up to --size."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--size", type=int, default=settings.SCHEMA_POOL_SIZE)

    def handle(self, *args, **options) -> None:
        built = schema_pool.refill(options["size"])
        self.stdout.write(f"built {built} spare schema(s); {schema_pool.size()} ready")

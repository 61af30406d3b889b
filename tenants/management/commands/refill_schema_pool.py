"""`manage.py refill_schema_pool`: build pre-migrated spare schemas (run after each deploy)."""

from __future__ import annotations

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from tenants import schema_pool, shards


class Command(BaseCommand):
    help = "Drop spare schemas built with other migrations and build new ones up to --size."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--size", type=int, default=settings.SCHEMA_POOL_SIZE)
        parser.add_argument("--shard", help="Only this shard's pool (default: every shard's).")

    def handle(self, *args, **options) -> None:
        names = [options["shard"]] if options["shard"] else list(shards.all_shards())
        for name in names:
            try:
                shards.alias_for(name)
            except shards.UnknownShard as error:
                raise CommandError(f"No shard “{name}”. See manage.py shard_list.") from error
            built = schema_pool.refill(options["size"], shard=name)
            ready = schema_pool.size(shard=name)
            prefix = "" if names == [shards.DEFAULT] else f"{name}: "
            self.stdout.write(f"{prefix}built {built} spare schema(s); {ready} ready")

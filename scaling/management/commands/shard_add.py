"""`manage.py shard_add NAME --url URL --region REGION [--weight N]`: register a database."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from core.actors import Actor
from scaling.shards import shard_add
from tenants import schema_pool


class Command(BaseCommand):
    help = "Register a PostgreSQL database as a shard: migrate its public schema, fill its pool."

    def add_arguments(self, parser) -> None:
        parser.add_argument("name")
        parser.add_argument("--url", required=True, help="postgres://user@host:port/db")
        parser.add_argument("--region", required=True)
        parser.add_argument("--weight", type=int, default=100, help="Relative capacity.")

    def handle(self, *args, **options) -> None:
        try:
            shard = shard_add(
                actor=Actor.system("manage.py shard_add"),
                name=options["name"],
                url=options["url"],
                region=options["region"],
                weight=options["weight"],
            )
        except ValidationError as error:
            lines = [
                f"{field}: {message}"
                for field, messages in error.message_dict.items()
                for message in messages
            ]
            raise CommandError("No shard was added.\n" + "\n".join(lines)) from error
        spares = schema_pool.size(shard=shard.name)
        self.stdout.write(
            f"added shard {shard.name} ({shard.region}, weight {shard.weight}); "
            f"{spares} spare schema(s) ready"
        )

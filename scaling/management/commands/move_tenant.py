"""`manage.py move_tenant SLUG --to SHARD`: move an organization's schema to another shard."""

from __future__ import annotations

import time

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from core.actors import Actor
from scaling.moves import MoveFailed, tenant_move
from tenants.residency import ResidencyViolation


class Command(BaseCommand):
    help = (
        "Copy an organization's schema to another shard (pg_dump), pause its writes for the "
        "switch, verify counts and checksums per table, switch the map, drop the old copy."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("slug")
        parser.add_argument("--to", required=True, dest="to", help="The target shard's name.")

    def handle(self, *args, **options) -> None:
        started = time.perf_counter()

        def progress(step: str, message: str) -> None:
            self.stdout.write(f"[{time.perf_counter() - started:6.2f} s] {step:<8} {message}")

        try:
            tenant_move(
                actor=Actor.system("manage.py move_tenant"),
                slug=options["slug"],
                to=options["to"],
                progress=progress,
            )
        except ValidationError as error:
            lines = [
                f"{field}: {message}"
                for field, messages in error.message_dict.items()
                for message in messages
            ]
            raise CommandError("Nothing was moved.\n" + "\n".join(lines)) from error
        except ResidencyViolation as error:
            raise CommandError(f"Nothing was moved. {error.message}") from error
        except MoveFailed as error:
            raise CommandError(
                f"The move failed; the organization stays where it was. {error}"
            ) from error

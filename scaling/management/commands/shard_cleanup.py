"""`manage.py shard_cleanup [--shard NAME] [--apply]`: what killed moves left behind."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from core.actors import Actor
from scaling.cleanup import shard_cleanup
from tenants import shards


class Command(BaseCommand):
    help = (
        "Find orphaned copies of organizations' schemas (a schema on a shard the directory does "
        "not map its organization to) and stale move triggers; with --apply, drop them."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--shard", help="Only this shard (default: every shard).")
        parser.add_argument("--apply", action="store_true", help="Drop them (default: report).")

    def handle(self, *args, **options) -> None:
        try:
            reports = shard_cleanup(
                actor=Actor.system("manage.py shard_cleanup"),
                apply=options["apply"],
                shard=options["shard"],
                progress=self.stdout.write,
            )
        except shards.UnknownShard as error:
            raise CommandError(
                f"No shard “{options['shard']}”. See manage.py shard_list."
            ) from error
        verb = "removed" if options["apply"] else "to remove"
        for report in reports:
            self.stdout.write(
                f"{report.shard}: {len(report.orphans)} orphaned copies and "
                f"{sum(report.triggers.values())} triggers {verb}"
            )
            for schema, why in sorted(report.skipped.items()):
                self.stdout.write(f"{report.shard}: left {schema} alone: {why}")
        if not options["apply"] and any(r.orphans or r.triggers for r in reports):
            self.stdout.write("Run again with --apply to remove them.")

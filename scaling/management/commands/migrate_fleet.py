"""`manage.py migrate_fleet`: migrate every shard's public schema and every organization's."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from scaling.fleet import Outcome, migrate_fleet


class Command(BaseCommand):
    help = (
        "Apply migrations to every organization on every shard in parallel; schemas already "
        "current are skipped from their recorded state; failures are reported at the end."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--workers", type=int, default=4, help="Parallel worker processes.")
        parser.add_argument("--shard", help="Only this shard's schemas.")

    def handle(self, *args, **options) -> None:
        def progress(done: int, total: int, outcome: Outcome) -> None:
            state = "ok" if outcome.ok else "FAILED"
            self.stdout.write(
                f"[{done}/{total}] {outcome.target} {state} ({outcome.seconds:.1f} s)"
            )

        report = migrate_fleet(
            workers=options["workers"], shard=options["shard"], progress=progress
        )
        self.stdout.write(
            f"{report.total} schema(s): {report.skipped} already current, "
            f"{len(report.migrated)} migrated, {len(report.failed)} failed"
        )
        if report.failed:
            for outcome in report.failed:
                last_line = outcome.error.strip().splitlines()[-1] if outcome.error else ""
                self.stderr.write(f"{outcome.target}: {last_line}")
            raise CommandError(
                f"{len(report.failed)} schema(s) failed; the others are migrated. Fix and run "
                "migrate_fleet again: it resumes with the ones not current."
            )

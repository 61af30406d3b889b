"""Close a month for every organization: numbered invoices from the usage ledger (idempotent)."""

from __future__ import annotations

from datetime import UTC, datetime

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from billing import invoicing
from core.actors import Actor


class Command(BaseCommand):
    help = "Close a billing month (default: the previous one) and issue its invoices."

    def add_arguments(self, parser):
        parser.add_argument("--month", help="YYYY-MM (default: last month, UTC).")

    def handle(self, *args, month: str | None = None, **options):
        if month:
            try:
                when = datetime.strptime(month, "%Y-%m").replace(tzinfo=UTC)
            except ValueError as error:
                raise CommandError("--month takes YYYY-MM, e.g. 2026-10") from error
        else:
            now = timezone.now().astimezone(UTC)
            when = datetime(now.year - (now.month == 1), (now.month - 2) % 12 + 1, 1, tzinfo=UTC)
        try:
            invoices = invoicing.close_billing_period(
                actor=Actor.system("close_billing_period"), year=when.year, month=when.month
            )
        except Exception as error:
            if hasattr(error, "message_dict"):
                raise CommandError(str(error.message_dict)) from error
            raise
        for invoice in invoices:
            self.stdout.write(f"{invoice.number}  {invoice.total} {invoice.currency}")
        self.stdout.write(f"{len(invoices)} invoices for {when:%Y-%m}")

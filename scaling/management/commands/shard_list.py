"""`manage.py shard_list`: every shard with its organizations, schemas and size."""

from __future__ import annotations

from django.core.management.base import BaseCommand

from scaling.shards import shard_reports


class Command(BaseCommand):
    help = "List the shards with their region, weight, organizations, schemas and size."

    def handle(self, *args, **options) -> None:
        rows = [("SHARD", "REGION", "WEIGHT", "ORGS", "SCHEMAS", "SPARES", "SIZE", "URL")]
        for report in shard_reports():
            rows.append(
                (
                    report.shard.name,
                    report.shard.region,
                    str(report.shard.weight),
                    str(report.organizations),
                    str(report.schemas),
                    str(report.spare_schemas),
                    f"{report.size_bytes / 1024 / 1024:.1f} MB",
                    report.shard.display_url,
                )
            )
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        for row in rows:
            self.stdout.write(
                "  ".join(
                    cell.ljust(width) for cell, width in zip(row, widths, strict=True)
                ).rstrip()
            )

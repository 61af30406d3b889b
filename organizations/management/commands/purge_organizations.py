"""`manage.py purge_organizations`: delete the organizations whose deletion grace period is over."""

from __future__ import annotations

from django.core.management.base import BaseCommand

from core.actors import Actor
from organizations import services


class Command(BaseCommand):
    help = (
        "Delete every organization whose requested deletion is due: its data keys are destroyed "
        "first (crypto-shredding), then its schema is dropped and its address freed. Run it "
        "daily (cron); each step is audited."
    )

    def handle(self, *args, **options) -> None:
        purged = services.organizations_purge_due(
            actor=Actor.system("manage.py purge_organizations")
        )
        for slug in purged:
            self.stdout.write(f"{slug}: keys destroyed, data deleted, address freed.")
        self.stdout.write(f"{len(purged)} organization(s) purged.")

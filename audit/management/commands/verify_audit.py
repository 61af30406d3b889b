"""`manage.py verify_audit --tenant <slug> | --platform`: is the audit chain intact?"""

from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandError

from audit import verify
from core.actors import Actor
from tenants import context
from tenants.models import Tenant


class Command(BaseCommand):
    help = (
        "Walk an audit log's hash chain and report whether it is intact or the first event where "
        "it breaks. Exits with status 1 when it is broken."
    )

    def add_arguments(self, parser) -> None:
        target = parser.add_mutually_exclusive_group(required=True)
        target.add_argument("--tenant", metavar="SLUG", help="An organization's log.")
        target.add_argument("--platform", action="store_true", help="The platform's own log.")
        parser.add_argument("--json", action="store_true", help="Print the report as JSON.")

    def handle(self, *args, **options) -> None:
        actor = Actor.system("manage.py verify_audit")
        if options["platform"]:
            with context.public_context():
                report = verify.audit_log_verify(actor=actor)
            name = "platform"
        else:
            with context.public_context():
                tenant = Tenant.objects.filter(slug=options["tenant"]).first()
            if tenant is None:
                raise CommandError(f"No organization with the slug “{options['tenant']}”.")
            with context.tenant_context(tenant):
                report = verify.audit_log_verify(actor=actor)
            name = tenant.slug
        if options["json"]:
            self.stdout.write(json.dumps(report.as_dict(), indent=2))
        elif report.is_intact:
            span = (
                f"#{report.first_sequence} to #{report.last_sequence}"
                if report.checked
                else "no events"
            )
            start = (
                f", starting after retention checkpoint #{report.checkpoint_sequence}"
                if report.checkpoint_sequence
                else ""
            )
            self.stdout.write(
                f"{name}: intact. {report.checked} events checked ({span}{start}).\n"
                f"head hash: {report.head_hash}"
            )
        else:
            self.stdout.write(
                f"{name}: BROKEN at event #{report.broken_sequence}: {report.reason}.\n"
                f"{report.checked} events before it are intact."
            )
        if not report.is_intact:
            raise SystemExit(1)

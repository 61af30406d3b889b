"""`manage.py provision_tenant`: create an organization from a script; prints its URL."""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from core.actors import Actor
from organizations import services
from tenants import residency


class Command(BaseCommand):
    help = "Create an organization with its owner, ready at once on <slug>.<PORTAL_DOMAIN>."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--slug", required=True)
        parser.add_argument("--name", required=True)
        parser.add_argument("--owner-email", required=True)
        parser.add_argument("--owner-password", required=True)
        parser.add_argument("--plan", default="free")
        parser.add_argument("--region", default=settings.DEFAULT_REGION, help="Home region.")
        parser.add_argument(
            "--residency-policy",
            default=residency.DEFAULT_POLICY,
            choices=residency.Policy.values,
            help="The regions the organization's data may live in (default: global).",
        )

    def handle(self, *args, **options) -> None:
        try:
            tenant = services.provision_tenant(
                actor=Actor.system("manage.py provision_tenant"),
                slug=options["slug"],
                name=options["name"],
                owner_email=options["owner_email"],
                owner_password=options["owner_password"],
                plan_slug=options["plan"],
                region=options["region"],
                residency_policy=options["residency_policy"],
            )
        except residency.ResidencyViolation as error:
            raise CommandError(f"Nothing was created. {error.message}") from error
        except ValidationError as error:
            lines = [
                f"{field}: {message}"
                for field, messages in error.message_dict.items()
                for message in messages
            ]
            raise CommandError("Nothing was created.\n" + "\n".join(lines)) from error
        self.stdout.write(tenant.url)

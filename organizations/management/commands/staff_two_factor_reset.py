"""`manage.py staff_two_factor_reset --email`: turn off a staff account's two-factor
authentication (its authenticator is lost); the account signs in with its password again."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from accounts import services
from accounts.models import User
from core.actors import Actor


class Command(BaseCommand):
    help = "Turn off two-factor authentication of a staff user (public schema); ends its sessions."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--email", required=True)

    def handle(self, *args, **options) -> None:
        try:
            user = services.staff_two_factor_reset(
                actor=Actor.system("manage.py staff_two_factor_reset"), email=options["email"]
            )
        except User.DoesNotExist as error:
            raise CommandError(f"no staff user {options['email']}") from error
        self.stdout.write(
            f"two-factor authentication is off for {user.email}; "
            "set it up again at /admin/two-factor/"
        )

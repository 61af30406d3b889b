"""`manage.py createstaff`: a platform staff account, for Django admin on the public host."""

from __future__ import annotations

import getpass

from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from accounts import services
from core.actors import Actor


class Command(BaseCommand):
    help = "Create a staff user in the public schema (prompts for the password)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--email", required=True)

    def handle(self, *args, **options) -> None:
        password = getpass.getpass("Password: ")
        try:
            validate_password(password)
        except ValidationError as error:
            raise CommandError(" ".join(error.messages)) from error
        user = services.staff_user_create(
            actor=Actor.system("manage.py createstaff"), email=options["email"], password=password
        )
        self.stdout.write(f"created staff user {user.email}")

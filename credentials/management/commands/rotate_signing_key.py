"""Rotate the JWT signing key: new tokens use a new key; the old one verifies until they expire."""

from __future__ import annotations

from django.core.management.base import BaseCommand

from core.actors import Actor
from credentials import services
from tenants.models import SigningKey, SigningKeyStatus


class Command(BaseCommand):
    help = (
        "Make a new JWT signing key active. Tokens signed with the previous key keep verifying "
        "until they expire (the refresh token lifetime), then that key is retired."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--retire-previous-now",
            action="store_true",
            help="The current key is compromised: every token it signed stops verifying now.",
        )
        parser.add_argument(
            "--retire-expired-only",
            action="store_true",
            help="Do not rotate; only retire previous keys whose tokens have all expired.",
        )

    def handle(self, *args, retire_previous_now: bool, retire_expired_only: bool, **options):
        actor = Actor.system("manage.py rotate_signing_key")
        if retire_expired_only:
            retired = services.signing_keys_retire_expired(actor=actor)
            self.stdout.write(f"Retired {len(retired)} key(s): {', '.join(retired) or '-'}")
            return
        key = services.signing_key_rotate(actor=actor, retire_previous_now=retire_previous_now)
        self.stdout.write(self.style.SUCCESS(f"Active signing key: {key.kid}"))
        for previous in SigningKey.objects.filter(status=SigningKeyStatus.PREVIOUS):
            self.stdout.write(f"Previous key {previous.kid} verifies until {previous.verify_until}")

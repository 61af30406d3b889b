"""`manage.py rotate_master_key`: re-wrap every organization's data keys under the current
master key (staff). Resumable: keys already under the current master key are skipped."""

from __future__ import annotations

import base64
import secrets

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from audit import services as audit
from core.actors import Actor
from tenants import context
from vault import keystore


class Command(BaseCommand):
    help = (
        "Re-wrap every organization's data keys under the current master key. In production, "
        "set AGENTPLANE_MASTER_KEY to the new key and AGENTPLANE_MASTER_KEY_PREVIOUS to the old "
        "one first; with a key file, --generate writes a new current key into it. Reads keep "
        "working throughout: the previous key still unwraps until --retire-previous."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--generate",
            action="store_true",
            help="Put a new random master key first in the key file (development or a key file).",
        )
        parser.add_argument(
            "--retire-previous",
            action="store_true",
            help="Afterwards, drop previous keys from the key file (nothing uses them any more).",
        )

    def _key_file(self):
        if settings.VAULT_MASTER_KEY:
            raise CommandError(
                "The master key comes from AGENTPLANE_MASTER_KEY: change the environment "
                "(new key, old one in AGENTPLANE_MASTER_KEY_PREVIOUS) and run this without "
                "--generate / --retire-previous."
            )
        from pathlib import Path

        if settings.VAULT_MASTER_KEY_FILE:
            return Path(settings.VAULT_MASTER_KEY_FILE)
        return keystore.development_master_key_file()

    def handle(self, *args, **options) -> None:
        if options["generate"]:
            path = self._key_file()
            current = path.read_text() if path.exists() else ""
            new = base64.b64encode(secrets.token_bytes(keystore.KEY_BYTES)).decode()
            keystore._write_private(path, new + "\n" + current)
            self.stdout.write(f"New master key {keystore.master_key_id(base64.b64decode(new))}.")
        keystore.reset()
        current = keystore.load_master_keys()[0]
        store = keystore.store()
        owners = store.owners()
        changed = 0
        for number, owner in enumerate(owners, start=1):
            changed += bool(store.rewrap(owner=owner))
            self.stdout.write(f"[{number}/{len(owners)}] {owner}")
        self.stdout.write(
            f"{changed} of {len(owners)} organizations re-wrapped under master key {current.id}."
        )
        if options["retire_previous"]:
            path = self._key_file()
            keystore._write_private(path, base64.b64encode(current.key).decode() + "\n")
            self.stdout.write("Previous master keys removed from the key file.")
        with context.public_context(), transaction.atomic():
            audit.record(
                actor=Actor.system("manage.py rotate_master_key"),
                action="master_key.rotated",
                resource_type="master_key",
                resource_id=current.id,
                details={
                    "organizations": len(owners),
                    "rewrapped": changed,
                    "retired_previous": bool(options["retire_previous"]),
                },
            )

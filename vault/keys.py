"""The organization's active data key version: read by every encrypting write, made on first use."""

from __future__ import annotations

from django.db import connection, transaction

from tenants import context
from vault import keystore
from vault.models import SINGLETON_PK, KeyState


def owner() -> str:
    return str(context.require_tenant().public_id)


def active_version() -> int:
    """The version new writes use. `FOR SHARE`: a rotation that switches versions waits for the
    writes that read the old one to commit, so its sweep never misses them."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT active_version FROM vault_keystate WHERE id = %s FOR SHARE",
            [SINGLETON_PK],
        )
        row = cursor.fetchone()
    if row is not None and row[0] > 0:
        return row[0]
    return _first_key()


def _first_key() -> int:
    with transaction.atomic():
        state, _ = KeyState.objects.select_for_update().get_or_create(pk=SINGLETON_PK)
        if state.active_version == 0:
            keystore.create_data_key(owner(), 1)
            state.active_version = 1
            state.save(update_fields=["active_version"])
        return state.active_version


def state() -> KeyState:
    found = KeyState.objects.filter(pk=SINGLETON_PK).first()
    return found if found is not None else KeyState(pk=SINGLETON_PK)

"""`EncryptedTextField`: the one field type for encrypted columns. No caller touches keys.

The column holds `vault.crypto`'s stored form. Reading the attribute decrypts (once per loaded
instance) under the current organization, the model's table, the row's primary key and the
column; saving encrypts under the organization's active data key version. The primary key must be
known before the first save (use a UUID default), since the ciphertext is bound to it.
"""

from __future__ import annotations

from typing import Any

from django.db import models
from django.db.models.query_utils import DeferredAttribute

from tenants import context
from vault import crypto

# Every concrete model with encrypted columns: rotation re-encrypts them all.
ENCRYPTED_MODELS: dict[type[models.Model], list[str]] = {}


class Ciphertext(str):
    """A value as loaded from the database, not decrypted yet."""


def _owner() -> str:
    return str(context.require_tenant().public_id)


class EncryptedAttribute(DeferredAttribute):
    """Decrypts on first read; a plain assignment stores plaintext until the next save."""

    def __get__(self, instance: Any, cls: Any = None) -> Any:
        if instance is None:
            return self
        value = super().__get__(instance, cls)
        if isinstance(value, Ciphertext):
            value = crypto.decrypt(
                str(value),
                owner=_owner(),
                table=instance._meta.db_table,
                row=str(instance.pk),
                column=self.field.column,
            )
            instance.__dict__[self.field.attname] = value
        return value

    def __set__(self, instance: Any, value: Any) -> None:
        instance.__dict__[self.field.attname] = value


class EncryptedTextField(models.TextField):
    descriptor_class = EncryptedAttribute

    def contribute_to_class(self, cls: type[models.Model], name: str, **kwargs: Any) -> None:
        super().contribute_to_class(cls, name, **kwargs)
        from django.apps import apps

        # Real models only: migrations render historical copies of them in their own registry.
        if not cls._meta.abstract and cls._meta.apps is apps:
            ENCRYPTED_MODELS.setdefault(cls, []).append(name)

    def from_db_value(self, value: Any, expression: Any, connection: Any) -> Any:
        return None if value is None else Ciphertext(value)

    def pre_save(self, model_instance: models.Model, add: bool) -> Any:
        from vault import keys  # keys reads the key state model, defined after this field

        plaintext = getattr(model_instance, self.attname)
        if plaintext is None:
            return None
        if model_instance.pk is None:
            raise ValueError("an encrypted row needs its primary key before it is saved")
        return crypto.encrypt(
            str(plaintext),
            owner=_owner(),
            table=model_instance._meta.db_table,
            row=str(model_instance.pk),
            column=self.column,
            version=keys.active_version(),
        )

    def value_to_string(self, obj: models.Model) -> str:
        # Serialization (dumpdata, exports) never writes plaintext by accident.
        raise TypeError("encrypted fields are not serialized")


def reencrypt(instance: models.Model, field_name: str, stored: str, version: int) -> str:
    """The value of `stored` (this row's column) encrypted again under `version`."""
    field = instance._meta.get_field(field_name)
    table, row = instance._meta.db_table, str(instance.pk)
    plaintext = crypto.decrypt(stored, owner=_owner(), table=table, row=row, column=field.column)
    return crypto.encrypt(
        plaintext, owner=_owner(), table=table, row=row, column=field.column, version=version
    )

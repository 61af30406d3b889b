"""Field encryption: stored form, tampering, moved ciphertexts, the generic error."""

from __future__ import annotations

import base64
import logging

import pytest
from django.db import connection

from core.actors import Actor
from tenants import context
from vault import crypto, keys
from vault.models import KnowledgeDocument, Secret
from vault.services import knowledge_create, secret_set

SYSTEM = Actor.system("tests")
VALUE = "sk-live-0123456789abcdef"


def raw(table: str, column: str, pk) -> str:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {column} FROM {table} WHERE id = %s", [pk])
        return cursor.fetchone()[0]


def write_raw(table: str, column: str, pk, value: str) -> None:
    with connection.cursor() as cursor:
        cursor.execute(f"UPDATE {table} SET {column} = %s WHERE id = %s", [value, pk])


def reload_value(pk) -> str:
    return Secret.objects.get(pk=pk).value


@pytest.fixture
def secret(acme):
    secret, _ = secret_set(actor=SYSTEM, name="STRIPE_KEY", value=VALUE)
    return secret


def test_the_value_is_stored_encrypted_and_reads_back(secret):
    stored = raw("vault_secret", "value", secret.pk)

    assert stored.startswith(f"ap1${keys.active_version()}$")
    assert VALUE not in stored
    assert "cdef" not in raw("vault_secret", "hint", secret.pk)
    assert reload_value(secret.pk) == VALUE
    assert Secret.objects.get(pk=secret.pk).hint == "cdef"


def test_each_encryption_draws_a_fresh_nonce(secret):
    first = raw("vault_secret", "value", secret.pk)
    secret_set(actor=SYSTEM, name="STRIPE_KEY", value=VALUE)

    assert raw("vault_secret", "value", secret.pk) != first
    assert reload_value(secret.pk) == VALUE


def tampered(stored: str, offset: int) -> str:
    head, version, body = stored.split("$")
    blob = bytearray(base64.b64decode(body))
    blob[offset] ^= 0x01
    return f"{head}${version}${base64.b64encode(bytes(blob)).decode()}"


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda s: tampered(s, 0), id="nonce"),
        pytest.param(lambda s: tampered(s, 14), id="ciphertext"),
        pytest.param(lambda s: tampered(s, -1), id="tag"),
        pytest.param(lambda s: s[:-8], id="truncated"),
        pytest.param(lambda s: s.split("$")[0] + "$" + s.split("$")[1] + "$" + "QUJD", id="short"),
        pytest.param(lambda s: s.replace("ap1$1$", "ap1$2$"), id="relabelled-version"),
        pytest.param(lambda s: "plain text", id="not-encrypted"),
    ],
)
def test_tampering_fails_with_one_generic_logged_error(secret, damage, caplog):
    write_raw("vault_secret", "value", secret.pk, damage(raw("vault_secret", "value", secret.pk)))

    with (
        caplog.at_level(logging.ERROR, logger="vault.crypto"),
        pytest.raises(crypto.DataUnreadable) as raised,
    ):
        reload_value(secret.pk)

    assert (raised.value.code, raised.value.status) == ("data_unreadable", 500)
    assert raised.value.message == "This data cannot be read."
    assert f"row={secret.pk} column=value" in caplog.text
    assert VALUE not in caplog.text


def test_a_ciphertext_moved_to_another_row_does_not_decrypt(acme):
    first, _ = secret_set(actor=SYSTEM, name="FIRST", value="first-value-123456")
    second, _ = secret_set(actor=SYSTEM, name="SECOND", value="second-value-12345")

    write_raw("vault_secret", "value", second.pk, raw("vault_secret", "value", first.pk))

    with pytest.raises(crypto.DataUnreadable):
        reload_value(second.pk)


def test_a_ciphertext_moved_to_another_column_does_not_decrypt(secret):
    write_raw("vault_secret", "hint", secret.pk, raw("vault_secret", "value", secret.pk))

    with pytest.raises(crypto.DataUnreadable):
        Secret.objects.get(pk=secret.pk).hint


def test_a_ciphertext_moved_to_another_table_does_not_decrypt(acme):
    secret, _ = secret_set(actor=SYSTEM, name="MOVED", value="moved-value-123456")
    document = knowledge_create(actor=SYSTEM, title="Doc", text="hello")
    stolen = raw("vault_secret", "value", secret.pk)
    # Same row id, other table: only the table in the associated data differs.
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE vault_knowledgedocument SET id = %s, text = %s WHERE id = %s",
            [secret.pk, stolen, document.pk],
        )

    with pytest.raises(crypto.DataUnreadable):
        KnowledgeDocument.objects.get(pk=secret.pk).text


def test_a_ciphertext_moved_to_another_organization_does_not_decrypt(org, other_org):
    with context.tenant_context(org.tenant):
        secret, _ = secret_set(actor=SYSTEM, name="SHARED", value="acme-only-value-123")
        stolen = raw("vault_secret", "value", secret.pk)
        hint = raw("vault_secret", "hint", secret.pk)
    with context.tenant_context(other_org.tenant):
        # The same row id and column in the other organization's schema.
        with connection.cursor() as cursor:
            cursor.execute(
                "INSERT INTO vault_secret (id, name, value, hint, created_at, updated_at, "
                "updated_by) VALUES (%s, 'SHARED', %s, %s, now(), now(), '')",
                [secret.pk, stolen, hint],
            )
        with pytest.raises(crypto.DataUnreadable):
            reload_value(secret.pk)


def test_reading_outside_an_organization_is_refused(secret):
    loaded = Secret.objects.get(pk=secret.pk)

    with context.public_context(), pytest.raises(context.OutsideOrganization):
        loaded.value

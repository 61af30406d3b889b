"""Field encryption: AES-256-GCM under the organization's data key, bound to where the value lives.

Stored form (text): `ap1$<key version>$<base64(nonce | ciphertext | tag)>`. `ap1` is the format;
the key version picks the data key. The associated data binds the organization, table, row id,
column, key version and format, so a ciphertext copied to another row, column or organization
(or relabelled with another version) does not decrypt. Each encryption draws a fresh 96-bit nonce.
"""

from __future__ import annotations

import base64
import binascii
import logging
import secrets

from cryptography.exceptions import InvalidTag

from core.errors import DomainError
from vault import keystore

logger = logging.getLogger(__name__)

FORMAT = "ap1"
NONCE_BYTES = 12
TAG_BYTES = 16


class DataUnreadable(DomainError):
    """A stored value does not decrypt: tampered with, moved, or its key destroyed. One generic
    error (a 500 in the error shape); the log says where, never what."""

    status = 500

    def __init__(self) -> None:
        super().__init__("data_unreadable", "This data cannot be read.")


def associated_data(*, owner: str, table: str, row: str, column: str, version: int) -> bytes:
    return "\x00".join([FORMAT, owner, table, row, column, str(version)]).encode()


def prefix(version: int) -> str:
    """Stored values encrypted under `version` start with this."""
    return f"{FORMAT}${version}$"


def _parse(stored: str) -> tuple[int, bytes]:
    """(key version, nonce | ciphertext | tag) of a stored value; ValueError if malformed."""
    head, version, body = stored.split("$", 2)
    if head != FORMAT or not version.isascii() or not version.isdigit() or len(version) > 9:
        raise ValueError("not an encrypted value")
    if version.startswith("0"):
        raise ValueError("not an encrypted value")
    return int(version), binascii.a2b_base64(body, strict_mode=True)


def stored_version(stored: str) -> int | None:
    try:
        return _parse(stored)[0]
    except (ValueError, binascii.Error):
        return None


def encrypt(plaintext: str, *, owner: str, table: str, row: str, column: str, version: int) -> str:
    nonce = secrets.token_bytes(NONCE_BYTES)
    sealed = keystore.cipher(owner, version).encrypt(
        nonce,
        plaintext.encode("utf-8", "surrogatepass"),
        associated_data(owner=owner, table=table, row=row, column=column, version=version),
    )
    return prefix(version) + base64.b64encode(nonce + sealed).decode("ascii")


def decrypt(stored: str, *, owner: str, table: str, row: str, column: str) -> str:
    """The plaintext, or DataUnreadable (logged with where it happened, nothing else)."""
    try:
        version, blob = _parse(stored)
        if len(blob) < NONCE_BYTES + TAG_BYTES:
            raise ValueError("truncated")
        plaintext = keystore.cipher(owner, version).decrypt(
            blob[:NONCE_BYTES],
            blob[NONCE_BYTES:],
            associated_data(owner=owner, table=table, row=row, column=column, version=version),
        )
        return plaintext.decode("utf-8", "surrogatepass")
    except (InvalidTag, ValueError, binascii.Error, keystore.KeyStoreError) as error:
        logger.error(
            "encrypted value unreadable (%s): organization=%s table=%s row=%s column=%s",
            type(error).__name__,
            owner,
            table,
            row,
            column,
        )
        raise DataUnreadable() from None

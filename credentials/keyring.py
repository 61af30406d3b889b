"""The JWT signing keyring: RSA keys kept in `public`, private halves wrapped, cached per process.

Every process keeps the keyring in memory (tokens are verified on every API request) and drops
it when a key is rotated or retired anywhere (tenants.invalidation), or after MAX_AGE_SECONDS at
the latest. It is read in `public_context()`: in a tenant's context `public` is not on the
search_path. The writes (rotation, retirement) are services in organizations.services.
"""

from __future__ import annotations

import base64
import hashlib
import os
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from django.utils import timezone
from jwt.algorithms import RSAAlgorithm

from core.keys import setting_key
from tenants import context, invalidation

ALGORITHM = "RS256"
RSA_KEY_SIZE = 2048
INVALIDATION_TOPIC = "signing-keys"
# A bound on how long a missed invalidation can keep a stale keyring.
MAX_AGE_SECONDS = 60.0
# An unknown `kid` reloads the keyring (a key rotated in another process), at most this often,
# so that a flood of made-up kids cannot turn into a flood of queries.
UNKNOWN_KID_RELOAD_SECONDS = 5.0
WRAP_NONCE_BYTES = 12


class KeyringError(RuntimeError):
    pass


@dataclass(frozen=True)
class VerifyingKey:
    kid: str
    public_key: Any
    verify_until: datetime | None  # None: the active key

    def is_usable(self, now: datetime) -> bool:
        return self.verify_until is None or now < self.verify_until

    def jwk(self) -> dict[str, Any]:
        data = RSAAlgorithm.to_jwk(self.public_key, as_dict=True)
        return {**data, "kid": self.kid, "use": "sig", "alg": ALGORITHM}


@dataclass(frozen=True)
class Keyring:
    active_kid: str | None
    private_key: Any = field(repr=False)
    verifying: dict[str, VerifyingKey]
    loaded_at: float


_keyring: Keyring | None = None
_last_unknown_reload = 0.0
_lock = threading.Lock()


def forget() -> None:
    """Drop this process's keyring (it is read again on next use)."""
    global _keyring
    _keyring = None


invalidation.register(INVALIDATION_TOPIC, forget)


def publish_change() -> None:
    """Make every process read the keyring again (after a rotation or a retirement commits)."""
    invalidation.publish(INVALIDATION_TOPIC)


def current() -> Keyring:
    invalidation.ensure_listening()
    keyring = _keyring
    if keyring is None or time.monotonic() - keyring.loaded_at > MAX_AGE_SECONDS:
        keyring = _load()
    return keyring


def _load() -> Keyring:
    global _keyring
    from tenants.models import SigningKey, SigningKeyStatus

    with _lock:
        with context.public_context():
            rows = list(SigningKey.objects.exclude(status=SigningKeyStatus.RETIRED))
        verifying: dict[str, VerifyingKey] = {}
        active_kid, private_key = None, None
        for row in rows:
            public_key = serialization.load_pem_public_key(row.public_key_pem.encode())
            is_active = row.status == SigningKeyStatus.ACTIVE
            verifying[row.kid] = VerifyingKey(
                kid=row.kid,
                public_key=public_key,
                verify_until=None if is_active else row.verify_until,
            )
            if is_active:
                active_kid = row.kid
                private_key = unwrap_private_key(row.kid, bytes(row.private_key_wrapped))
        _keyring = Keyring(
            active_kid=active_kid,
            private_key=private_key,
            verifying=verifying,
            loaded_at=time.monotonic(),
        )
        return _keyring


def signing_key() -> tuple[str, Any]:
    """The active key's kid and private key (migrations create the first key; token issuance
    creates one if it is missing: credentials.services)."""
    keyring = current()
    if keyring.active_kid is None or keyring.private_key is None:
        raise KeyringError("no active signing key")
    return keyring.active_kid, keyring.private_key


def verifying_key(kid: str) -> Any | None:
    """The public key named `kid` if it may still verify tokens, else None."""
    global _last_unknown_reload
    keyring = current()
    key = keyring.verifying.get(kid)
    if key is None:
        now = time.monotonic()
        if now - _last_unknown_reload < UNKNOWN_KID_RELOAD_SECONDS:
            return None
        _last_unknown_reload = now
        key = _load().verifying.get(kid)
        if key is None:
            return None
    return key.public_key if key.is_usable(timezone.now()) else None


def jwks() -> dict[str, Any]:
    """The public keys that may verify tokens now, as a JWK Set (RFC 7517)."""
    now = timezone.now()
    keys = [key.jwk() for key in current().verifying.values() if key.is_usable(now)]
    return {"keys": sorted(keys, key=lambda item: item["kid"])}


# Key generation and wrapping -----------------------------------------------------------------


@dataclass(frozen=True)
class NewKey:
    kid: str
    public_key_pem: str
    private_key_wrapped: bytes = field(repr=False)


def generate() -> NewKey:
    private_key = rsa.generate_private_key(public_exponent=65537, key_size=RSA_KEY_SIZE)
    public_pem = private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    # The kid is the key's thumbprint-like digest: stable, and says nothing secret.
    digest = hashlib.sha256(public_pem).digest()
    kid = base64.urlsafe_b64encode(digest[:15]).decode()
    private_der = private_key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return NewKey(
        kid=kid,
        public_key_pem=public_pem.decode(),
        private_key_wrapped=wrap_private_key(kid, private_der),
    )


def _wrapping_key() -> bytes:
    return setting_key("SIGNING_KEY_WRAPPING_KEY", info=b"agentplane signing-key wrap v1")


def _associated_data(kid: str) -> bytes:
    # Binds the ciphertext to its kid: a wrapped key copied onto another row does not unwrap.
    return b"agentplane/signing-key/v1/" + kid.encode()


def wrap_private_key(kid: str, private_der: bytes) -> bytes:
    nonce = os.urandom(WRAP_NONCE_BYTES)
    return nonce + AESGCM(_wrapping_key()).encrypt(nonce, private_der, _associated_data(kid))


def unwrap_private_key(kid: str, wrapped: bytes) -> Any:
    from cryptography.exceptions import InvalidTag

    nonce, ciphertext = wrapped[:WRAP_NONCE_BYTES], wrapped[WRAP_NONCE_BYTES:]
    try:
        der = AESGCM(_wrapping_key()).decrypt(nonce, ciphertext, _associated_data(kid))
    except InvalidTag as error:
        raise KeyringError(
            f"cannot unwrap signing key {kid}: wrong SIGNING_KEY_WRAPPING_KEY (or SECRET_KEY); "
            "restore it, or rotate with `manage.py rotate_signing_key`"
        ) from error
    return serialization.load_der_private_key(der, password=None)

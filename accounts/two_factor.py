"""Two-factor authentication's mechanics: TOTP secrets (encrypted at rest), codes, recovery codes
and the QR code of an authenticator app's setup. No database writes: accounts.services does those.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

import pyotp
import segno
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from django.utils import timezone

from core.keys import setting_key
from tenants import context

ISSUER = "AgentPlane"
RECOVERY_CODE_COUNT = 10
# Lowercase letters and digits without the look-alikes (0/o, 1/l/i): 31 symbols, 10 of them
# in a code (about 49 bits; a code works once and sign-in is throttled).
_RECOVERY_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"
_RECOVERY_LENGTH = 10
NONCE_BYTES = 12


class SecretUnreadable(Exception):
    """The stored secret does not decrypt here: another organization's, another user's, or the
    key (TWO_FACTOR_KEY, else SECRET_KEY) changed."""


def new_secret() -> str:
    """A fresh base32 TOTP secret (160 bits, RFC 4226's recommendation)."""
    return pyotp.random_base32(32)


def _key() -> bytes:
    return setting_key("TWO_FACTOR_KEY", info=b"agentplane totp-secret v1")


def _associated_data(user_id: int) -> bytes:
    # Binds the ciphertext to this organization (or the platform, for staff) and this user: a
    # secret copied to another row or another organization's schema does not decrypt.
    tenant = context.current_tenant()
    owner = str(tenant.public_id) if tenant is not None else "platform"
    return f"agentplane/totp/v1/{owner}/{user_id}".encode()


def encrypt_secret(secret: str, *, user_id: int) -> str:
    nonce = secrets.token_bytes(NONCE_BYTES)
    sealed = AESGCM(_key()).encrypt(nonce, secret.encode(), _associated_data(user_id))
    return base64.b64encode(nonce + sealed).decode()


def decrypt_secret(stored: str, *, user_id: int) -> str:
    try:
        raw = base64.b64decode(stored)
        plain = AESGCM(_key()).decrypt(
            raw[:NONCE_BYTES], raw[NONCE_BYTES:], _associated_data(user_id)
        )
    except (InvalidTag, ValueError) as error:
        raise SecretUnreadable from error
    return plain.decode()


def normalize_code(code: object) -> str:
    """What a person typed, without spaces and dashes, lowercased; empty when not a string."""
    if not isinstance(code, str) or len(code) > 64:
        return ""
    return "".join(code.split()).replace("-", "").lower()


def is_totp_code(code: str) -> bool:
    return len(code) == 6 and code.isascii() and code.isdigit()


def matching_step(secret: str, code: str, *, after_step: int) -> int | None:
    """The 30-second step (this one, or one either side for clock drift) whose code is `code`,
    if it is later than `after_step` (each code works once); else None."""
    if not is_totp_code(code):
        return None
    totp = pyotp.TOTP(secret)
    current = totp.timecode(timezone.now())
    for step in (current - 1, current, current + 1):
        if step > after_step and hmac.compare_digest(totp.generate_otp(step), code):
            return step
    return None


def provisioning_uri(secret: str, *, account: str, organization: str) -> str:
    """The `otpauth://` address an authenticator app reads from the QR code."""
    label = f"{ISSUER} {organization}" if organization else ISSUER
    return pyotp.TOTP(secret).provisioning_uri(name=account, issuer_name=label)


def qr_svg(uri: str) -> str:
    """The QR code of `uri` as an inline SVG element, labelled for screen readers."""
    svg = segno.make(uri, error="m").svg_inline(scale=5, dark="#111827", light="#ffffff")
    return svg.replace("<svg ", '<svg role="img" aria-label="QR code of the setup key" ', 1)


def new_recovery_codes() -> list[str]:
    """Ten fresh recovery codes, shown to the person as `xxxxx-xxxxx`."""
    codes = []
    for _ in range(RECOVERY_CODE_COUNT):
        raw = "".join(secrets.choice(_RECOVERY_ALPHABET) for _ in range(_RECOVERY_LENGTH))
        codes.append(f"{raw[:5]}-{raw[5:]}")
    return codes


def recovery_code_hash(code: str) -> str:
    """The stored form of a recovery code (as typed: normalized first)."""
    return hashlib.sha256(normalize_code(code).encode()).hexdigest()


def secret_display(secret: str) -> str:
    """The setup key in groups of four, for typing it into an app by hand."""
    return " ".join(secret[index : index + 4] for index in range(0, len(secret), 4))

"""API key material: the format (prefix, lookup id, secret, checksum) and the keyed hash at rest.

    agp_ + 12-char lookup id + 32-char secret + 6-char checksum   (54 characters, base62)

The secret carries 190 bits of entropy. The checksum (CRC32 of everything before it, base62, the
shape GitHub's tokens use) lets a mistyped key be refused before any database work and lets
secret scanners recognise a leaked key without a false-positive flood. At rest only
HMAC-SHA-256(server key, tenant id | lookup id | secret) is kept: a database dump yields no key,
and a hash copied to another row or organization matches nothing.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import string
import zlib
from dataclasses import dataclass, field
from functools import lru_cache

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings

PREFIX = "agp_"
ALPHABET = string.digits + string.ascii_uppercase + string.ascii_lowercase
LOOKUP_ID_LENGTH = 12
SECRET_LENGTH = 32
CHECKSUM_LENGTH = 6
LENGTH = len(PREFIX) + LOOKUP_ID_LENGTH + SECRET_LENGTH + CHECKSUM_LENGTH
_ALPHABET_SET = frozenset(ALPHABET)


@dataclass(frozen=True)
class ParsedKey:
    lookup_id: str
    secret: str = field(repr=False)


def _random(length: int) -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(length))


def base62(number: int, width: int) -> str:
    digits = []
    while number:
        number, remainder = divmod(number, 62)
        digits.append(ALPHABET[remainder])
    return "".join(reversed(digits)).rjust(width, ALPHABET[0])


def checksum(body: str) -> str:
    return base62(zlib.crc32(body.encode()), CHECKSUM_LENGTH)


def generate() -> tuple[str, ParsedKey]:
    """A new key: the full text (shown once) and its parts."""
    lookup_id, secret = _random(LOOKUP_ID_LENGTH), _random(SECRET_LENGTH)
    body = PREFIX + lookup_id + secret
    return body + checksum(body), ParsedKey(lookup_id=lookup_id, secret=secret)


def looks_like_key(raw: str) -> bool:
    return raw.startswith(PREFIX)


def parse(raw: str) -> ParsedKey | None:
    """The key's parts, or None when it is not well formed or its checksum is wrong."""
    if len(raw) != LENGTH or not raw.startswith(PREFIX):
        return None
    rest = raw[len(PREFIX) :]
    if not set(rest) <= _ALPHABET_SET:
        return None
    body, given = raw[:-CHECKSUM_LENGTH], raw[-CHECKSUM_LENGTH:]
    if not hmac.compare_digest(checksum(body), given):
        return None
    return ParsedKey(
        lookup_id=rest[:LOOKUP_ID_LENGTH],
        secret=rest[LOOKUP_ID_LENGTH : LOOKUP_ID_LENGTH + SECRET_LENGTH],
    )


@lru_cache(maxsize=4)
def _hash_key(configured: str, secret_key: str) -> bytes:
    if configured:
        return configured.encode()
    return HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=b"agentplane api-key hash v1"
    ).derive(secret_key.encode())


def hash_secret(*, tenant_id: str, lookup_id: str, secret: str) -> str:
    key = _hash_key(settings.API_KEY_HASH_KEY, settings.SECRET_KEY)
    message = f"{tenant_id}|{lookup_id}|{secret}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def hashes_match(stored: str, computed: str) -> bool:
    return hmac.compare_digest(stored.encode(), computed.encode())


def fingerprint(raw: str) -> str:
    """A short, non-reversible tag of a presented credential (for correlating failures in logs)."""
    return base64.urlsafe_b64encode(hashlib.sha256(raw.encode()).digest()[:6]).decode()

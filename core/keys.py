"""32-byte keys named by settings: the configured base64 value, or (development) one derived
from SECRET_KEY with HKDF, a different one per purpose."""

from __future__ import annotations

import base64

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured


def setting_key(name: str, *, info: bytes) -> bytes:
    """The key in setting `name` (base64 of 32 bytes), or derived from SECRET_KEY for `info`."""
    configured = getattr(settings, name)
    if configured:
        key = base64.b64decode(configured)
        if len(key) != 32:
            raise ImproperlyConfigured(f"{name} must be base64 of 32 bytes")
        return key
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(
        settings.SECRET_KEY.encode()
    )

"""`Idempotency-Key` (IETF draft-ietf-httpapi-idempotency-key-header) for the API's creating
POSTs; `core.api.ApiView` applies it to every POST handler (core reaches this module through the
IDEMPOTENCY_STORE setting, as DRF reaches its pluggable classes).

The record is inserted in the same transaction as the work it guards: a concurrent retry with
the same key waits on the unique index until the first commits, then replays its response (or,
if the first failed and rolled back, does the work itself). So the same key and body do the work
once; the same key with another body is a 422; an error response is not kept (the retry runs
again). Keys are scoped to the organization (the schema) and the caller, for 24 hours.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from django.conf import settings
from django.db import connection
from django.utils import timezone

from idempotency.models import IdempotencyRecord

TTL = timedelta(hours=24)
KEPT_HEADERS = ("Location",)


# The table name is the model's (never input); values are parameters.
CLAIM = """
INSERT INTO {table} (key_id, fingerprint, status_code, body, headers, created_at, expires_at)
VALUES (%s, %s, NULL, %s, '{{}}', %s, %s)
ON CONFLICT (key_id) DO NOTHING
RETURNING id
"""


@dataclass(frozen=True)
class Stored:
    status: int
    data: Any
    headers: dict[str, str]


class KeyReused(Exception):
    """The key was used with another request."""


def _secret() -> bytes:
    return hashlib.sha256(f"agentplane.idempotency:{settings.SECRET_KEY}".encode()).digest()


def key_id(*, caller: str, key: str) -> str:
    return hmac.new(_secret(), f"id:{caller}:{key}".encode(), hashlib.sha256).hexdigest()


def _cipher(caller: str, key: str) -> AESGCM:
    derived = hmac.new(_secret(), f"enc:{caller}:{key}".encode(), hashlib.sha256).digest()
    return AESGCM(derived)


def fingerprint(*, method: str, path: str, data: Any) -> str:
    canonical = json.dumps([method, path, data], sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()


def begin(*, caller: str, key: str, request_fingerprint: str) -> Stored | None:
    """Claim the key inside the caller's transaction; a Stored response to replay if the key
    was already used with this request (KeyReused if with another)."""
    now = timezone.now()
    IdempotencyRecord.objects.filter(expires_at__lt=now).delete()
    identifier = key_id(caller=caller, key=key)
    table = IdempotencyRecord._meta.db_table
    with connection.cursor() as cursor:
        statement = CLAIM.format(table=table)  # noqa: S608 # nosec B608 (the model's)
        cursor.execute(
            statement,
            [identifier, request_fingerprint, b"", now, now + TTL],
        )
        claimed = cursor.fetchone() is not None
    if claimed:
        return None
    record = IdempotencyRecord.objects.get(key_id=identifier)
    if not hmac.compare_digest(record.fingerprint, request_fingerprint):
        raise KeyReused
    if record.status_code is None:  # cannot happen across transactions: the insert waited
        raise KeyReused
    nonce, sealed = bytes(record.body[:12]), bytes(record.body[12:])
    plain = _cipher(caller, key).decrypt(nonce, sealed, identifier.encode())
    return Stored(record.status_code, json.loads(plain), dict(record.headers))


def complete(*, caller: str, key: str, status: int, data: Any, headers: dict[str, str]) -> None:
    """Keep a success response for the key's retries (in the same transaction as the work)."""
    identifier = key_id(caller=caller, key=key)
    nonce = os.urandom(12)
    plain = json.dumps(data, default=str).encode("utf-8", "surrogatepass")
    sealed = nonce + _cipher(caller, key).encrypt(nonce, plain, identifier.encode())
    kept = {name: value for name, value in headers.items() if name in KEPT_HEADERS}
    IdempotencyRecord.objects.filter(key_id=identifier).update(
        status_code=status, body=sealed, headers=kept
    )


def abandon(*, caller: str, key: str) -> None:
    """Forget the key (the work failed): a retry does it again."""
    IdempotencyRecord.objects.filter(key_id=key_id(caller=caller, key=key)).delete()

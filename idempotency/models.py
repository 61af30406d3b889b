"""Responses kept for `Idempotency-Key` retries: one table per schema (each organization's own,
and `public`), rows kept 24 hours. Neither the key nor the response is stored in clear."""

from __future__ import annotations

from django.db import models


class IdempotencyRecord(models.Model):
    # HMAC of (who, the key): the client's key itself is never stored.
    key_id = models.CharField(max_length=64, unique=True)
    # SHA-256 of the request (method, path, parsed body): another body under the same key is
    # refused.
    fingerprint = models.CharField(max_length=64)
    status_code = models.PositiveSmallIntegerField(null=True)  # null while the first one runs
    # The response body, AES-GCM encrypted under a key derived from the client's key.
    body = models.BinaryField(default=b"")
    headers = models.JSONField(default=dict)
    created_at = models.DateTimeField()
    expires_at = models.DateTimeField(db_index=True)

    def __str__(self) -> str:
        return f"{self.key_id[:12]}… {self.status_code}"

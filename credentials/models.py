"""An organization's machine credentials, in its own schema: API keys and refresh tokens."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone


class ApiKey(models.Model):
    """An API key. Only a keyed hash of its secret is stored; the secret is shown once.

    The key acts for the organization within its `scopes`, and never beyond what its creator's
    current role grants (see credentials.authentication).
    """

    name = models.CharField(max_length=100)
    # The public part of the key (`agp_<lookup_id>...`): found by it through the unique index.
    lookup_id = models.CharField(max_length=16, unique=True)
    # HMAC-SHA-256 of the secret, bound to the tenant and the lookup id (credentials.api_keys).
    secret_hash = models.CharField(max_length=64)
    # The organization's public id, repeated in the row: checked against the host's tenant.
    tenant_id = models.CharField(max_length=64)
    scopes = models.JSONField(default=list)
    # The key's own limits, beside its organization's: {resource: {"limit", "window_seconds"}}
    # for resources in KEY_LIMIT_RESOURCES (billing enforces them; docs/billing.md).
    rate_limits = models.JSONField(default=dict, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="api_keys"
    )
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    revoked_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix})"

    @property
    def prefix(self) -> str:
        from credentials.api_keys import PREFIX

        return f"{PREFIX}{self.lookup_id}"

    @property
    def is_expired(self) -> bool:
        return self.expires_at is not None and self.expires_at <= timezone.now()

    @property
    def status(self) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if self.is_expired:
            return "expired"
        return "active"


class RefreshToken(models.Model):
    """A refresh token that was issued. Rotation links tokens into a family (one sign-in).

    A refresh token works once: using it marks it used and issues its successor. Presenting a
    used token again is a replay (the token leaked), and revokes the whole family.
    """

    jti = models.CharField(max_length=64, unique=True)
    family = models.UUIDField(db_index=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="refresh_tokens"
    )
    issued_at = models.DateTimeField()
    expires_at = models.DateTimeField()
    used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-issued_at"]
        indexes = [models.Index(fields=["expires_at"], name="refresh_token_expiry_idx")]

    def __str__(self) -> str:
        return f"refresh token {self.jti[:8]}… of user {self.user_id}"

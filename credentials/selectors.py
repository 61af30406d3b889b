"""Reads of API keys and refresh tokens, in the current organization's schema."""

from __future__ import annotations

from django.db.models import Q, QuerySet
from django.utils import timezone

from core.actors import Actor
from credentials.models import ApiKey


def api_key_find(*, lookup_id: str) -> ApiKey | None:
    """The key with this lookup id, with its creator (one indexed query), or None."""
    return ApiKey.objects.select_related("created_by").filter(lookup_id=lookup_id).first()


def api_key_list(*, actor: Actor) -> QuerySet[ApiKey]:
    """Every key of the organization, newest first (callers check `api_keys:manage`)."""
    return ApiKey.objects.select_related("created_by").order_by("-created_at", "-id")


def api_key_get(*, actor: Actor, key_id: int) -> ApiKey:
    """The key by id; ApiKey.DoesNotExist for "no such key" and "not this organization's" alike."""
    return ApiKey.objects.select_related("created_by").get(pk=key_id)


def api_key_active_exists(*, actor: Actor) -> bool:
    """Whether the organization holds a key that is neither revoked nor expired (onboarding: it
    says nothing about any key but that one exists)."""
    return (
        ApiKey.objects.filter(revoked_at__isnull=True)
        .filter(Q(expires_at__isnull=True) | Q(expires_at__gt=timezone.now()))
        .exists()
    )

"""Reads of the vault: secrets (names and masks only), knowledge documents, the key state."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied
from django.db.models import Q, QuerySet

from core.actors import Actor
from vault import keys
from vault.models import KeyState, KnowledgeDocument, Secret
from vault.services import _uuid

SEARCH_MAX_LENGTH = 200


def _need(actor: Actor, permission: str) -> None:
    if not actor.can(permission):
        raise PermissionDenied(f"This needs the “{permission}” permission.")


def secret_list(*, actor: Actor) -> QuerySet[Secret]:
    """Every secret, by name. The value column is never loaded; the hint is (for the mask)."""
    _need(actor, "secrets:read")
    return Secret.objects.defer("value").order_by("name")


def secret_get(*, actor: Actor, secret_id: Any) -> Secret:
    _need(actor, "secrets:read")
    secret = Secret.objects.defer("value").filter(pk=_uuid(secret_id)).first()
    if secret is None:
        raise Secret.DoesNotExist
    return secret


def secret_names(*, actor: Actor) -> list[str]:
    _need(actor, "secrets:read")
    return list(Secret.objects.order_by("name").values_list("name", flat=True))


def knowledge_list(
    *, actor: Actor, search: str = "", tags: list[str] | None = None
) -> QuerySet[KnowledgeDocument]:
    """Documents by title; `search` matches words of the title or a tag, `tags` must all be on
    the document. The encrypted text is not loaded (a list never decrypts)."""
    _need(actor, "knowledge:read")
    documents = KnowledgeDocument.objects.defer("text").order_by("title", "pk")
    search = search.strip()[:SEARCH_MAX_LENGTH]
    if search:
        documents = documents.filter(
            Q(title__icontains=search) | Q(tags__contains=[search.lower()])
        )
    for tag in tags or []:
        documents = documents.filter(tags__contains=[tag])
    return documents


def knowledge_get(*, actor: Actor, document_id: Any) -> KnowledgeDocument:
    _need(actor, "knowledge:read")
    document = KnowledgeDocument.objects.filter(pk=_uuid(document_id)).first()
    if document is None:
        raise KnowledgeDocument.DoesNotExist
    return document


def key_state(*, actor: Actor) -> KeyState:
    _need(actor, "settings:write")
    return keys.state()

"""Retention per data class: delete knowledge documents kept longer than their class allows."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from audit import services as audit
from core.actors import Actor
from tenants import context
from vault.models import Classification, KnowledgeDocument


def data_retention_apply(*, actor: Actor) -> dict[str, int]:
    """In the current organization: per class, delete documents unchanged for longer than
    settings.DATA_RETENTION_DAYS[class] (None keeps them). One audit event with the counts."""
    audit.require_staff(actor, "data.retention_applied", "organization")
    now = timezone.now()
    removed: dict[str, int] = {}
    with transaction.atomic():
        for classification in Classification.values:
            days = settings.DATA_RETENTION_DAYS.get(classification)
            if days is None:
                continue
            expired = KnowledgeDocument.objects.filter(
                classification=classification, updated_at__lt=now - timedelta(days=days)
            )
            removed[classification], _ = expired.delete()
        tenant = context.require_tenant()
        audit.emit(
            actor=actor,
            action="data.retention_applied",
            resource_type="organization",
            resource_id=str(tenant.public_id),
            details={
                "removed": removed,
                "retention_days": {k: v for k, v in settings.DATA_RETENTION_DAYS.items()},
            },
        )
    return removed

"""Real-time events: group names, and publishing to an organization's namespace after commit."""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction
from django.utils import timezone

if TYPE_CHECKING:
    from tenants.models import Tenant

logger = logging.getLogger(__name__)

SUBJECT_TOKEN = re.compile(r"^[A-Za-z0-9_-]+$")


def group_name(tenant_id: str, subject: str) -> str:
    """The one builder of Channels group names: `tenant.<tenant_id>.<subject>`."""
    tokens = subject.split(".")
    if not tokens or not all(SUBJECT_TOKEN.match(token) for token in tokens):
        raise ValueError(f"invalid subject: {subject!r}")
    return f"tenant.{tenant_id}.{subject}"


def publish_on_commit(tenant: Tenant, subject: str, data: dict[str, Any]) -> None:
    """Send `data` to the tenant's `subject` group once the current transaction commits."""
    tenant_id = str(tenant.public_id)
    group = group_name(tenant_id, subject)
    message = {
        "type": "tenant.event",
        "subject": subject,
        "tenant": tenant_id,
        "timestamp": timezone.now().isoformat(),
        "data": data,
    }

    def send() -> None:
        layer = get_channel_layer()
        if layer is None:
            return
        try:
            async_to_sync(layer.group_send)(group, message)
        except Exception:  # the change is committed; a lost live event must not fail it
            logger.warning("could not publish %s to %s", subject, group, exc_info=True)

    transaction.on_commit(send)

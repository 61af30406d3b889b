"""Helpers for tests that need usage on the ledger."""

from __future__ import annotations

from django.utils import timezone

from billing import ledger, services
from billing.ledger import Count
from core.actors import Actor


def record_usage(tenant, meter: str, amount: int, groups=None, at=None) -> None:
    """Put `amount` of `meter` on the ledger in PostgreSQL (as a rollup would) and drop the
    month's quota counter in Redis, so that it is seeded again from the ledger."""
    ledger.add_directly(tenant.pk, [Count(meter, amount, groups, at)], timezone.now())
    services.quota_forget(tenant=tenant, meter=meter)


def clear_usage(tenant) -> None:
    """Forget a committed organization's ledger (a test that shares it with later tests)."""
    from billing.models import UsageBucket
    from tenants import context

    services.rollup(actor=Actor.system("tests"), include_current=True)
    with context.public_context():
        UsageBucket.objects.filter(tenant_id=tenant.pk).delete()
    services.quota_forget(tenant=tenant)


def messages_used(tenant) -> int:
    from billing import selectors

    now = timezone.now()
    start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return selectors.meter_total(tenant=tenant, meter="gateway_messages", start=start, end=now)

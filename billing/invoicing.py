"""Invoices: a closed month per organization from the usage ledger (the numbers the reports and
quotas use), the plan fee prorated across plan changes, money in Decimal with its currency."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from audit import services as audit
from billing import ledger, pricing, selectors
from billing.models import Invoice, InvoiceLine, PlanChange, Price
from core.actors import Actor
from tenants import context

CENT = Decimal("0.01")
CURRENCY = pricing.CURRENCY


def month_bounds(year: int, month: int) -> tuple[datetime, datetime]:
    start = datetime(year, month, 1, tzinfo=UTC)
    end = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=UTC)
    return start, end


def _ceil_hour(moment: datetime) -> datetime:
    floor = ledger.hour_of(moment)
    return floor if floor == moment else floor + timedelta(hours=1)


def money(value: Decimal) -> Decimal:
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


@dataclass(frozen=True)
class Line:
    description: str
    meter: str
    quantity: Decimal
    unit: str
    unit_price: Decimal
    amount: Decimal


def plan_segments(
    tenant: Any, start: datetime, end: datetime
) -> list[tuple[Any, datetime, datetime]]:
    """(plan, from, to) covering the part of [start, end) the organization existed in."""
    from tenants.models import Plan

    begin = max(start, tenant.created_at)
    if begin >= end:
        return []
    with context.public_context():
        changes = list(
            PlanChange.objects.filter(tenant_id=tenant.pk, at__lt=end).order_by("at", "id")
        )
        plans = {plan.pk: plan for plan in Plan.objects.all()}
    before = [change for change in changes if change.at <= begin]
    within = [change for change in changes if change.at > begin]
    if before:
        current = before[-1].plan_id
    elif within:
        current = within[0].plan_id  # no record before the first change (older organizations)
    else:
        current = tenant.plan_id
    segments = []
    cursor = begin
    for change in within:
        if change.plan_id != current:
            segments.append((plans[current], cursor, change.at))
            cursor, current = change.at, change.plan_id
    segments.append((plans[current], cursor, end))
    return [segment for segment in segments if segment[2] > segment[1]]


def invoice_lines(tenant: Any, start: datetime, end: datetime) -> list[Line]:
    """What the organization owes for [start, end): the plan fee per segment, then usage."""
    lines: list[Line] = []
    month_seconds = Decimal((end - start).total_seconds())
    segments = plan_segments(tenant, start, end)
    for plan, begin, finish in segments:
        fee = Decimal(plan.price_monthly_cents) / 100
        share = Decimal((finish - begin).total_seconds()) / month_seconds
        days = f"{begin:%b %d} – {finish:%b %d}" if share < 1 else f"{begin:%B %Y}"
        lines.append(
            Line(
                f"{plan.name} plan ({days})",
                "",
                share.quantize(Decimal("0.000001")),
                "month",
                fee,
                money(fee * share),
            )
        )
    with context.public_context():
        prices = list(Price.objects.all())
    # Messages are priced by the plan in force in the hour they were sent.
    for plan, begin, finish in segments or [(tenant.plan, start, end)]:
        # An hour's messages belong to the plan in force when that hour ended (hours are the
        # ledger's grain): the segments' bounds rounded up to the hour never overlap.
        messages = selectors.meter_total(
            tenant=tenant, meter="gateway_messages", start=_ceil_hour(begin), end=_ceil_hour(finish)
        )
        if not messages:
            continue
        per_message = Decimal(plan.price_per_thousand_messages_cents) / 100 / 1000
        lines.append(
            Line(
                f"Gateway messages ({plan.name})",
                "gateway_messages",
                Decimal(messages),
                "messages",
                per_message,
                money(Decimal(messages) * per_message),
            )
        )
    by_model = selectors.meter_group_totals(
        tenant=tenant, meter="llm_tokens", start=start, end=end, group_by="model"
    )
    for model, tokens in sorted(by_model.items()):
        price = pricing.price_for(prices, "llm_tokens", model)
        if price is None or not tokens:
            continue
        unit_price = price.unit_price / price.per_units
        lines.append(
            Line(
                f"LLM tokens: {model}",
                "llm_tokens",
                Decimal(tokens),
                "tokens",
                unit_price,
                money(Decimal(tokens) * unit_price),
            )
        )
    for price in prices:
        if price.meter in {"llm_tokens", "gateway_messages"} or price.model:
            continue
        used = selectors.meter_total(tenant=tenant, meter=price.meter, start=start, end=end)
        if not used:
            continue
        unit_price = price.unit_price / price.per_units
        lines.append(
            Line(
                price.meter.replace("_", " ").capitalize(),
                price.meter,
                Decimal(used),
                "units",
                unit_price,
                money(Decimal(used) * unit_price),
            )
        )
    return lines


def invoice_close(*, actor: Actor, tenant: Any, year: int, month: int) -> Invoice:
    """Close one month of one organization: its invoice, written once (a second run returns it)."""
    if actor.kind != "system":
        raise PermissionDenied("Only the platform closes billing periods.")
    start, end = month_bounds(year, month)
    if end > timezone.now():
        raise ValidationError({"month": ["That month is not over yet."]})
    with context.public_context():
        existing = Invoice.objects.filter(tenant_id=tenant.pk, period_start=start).first()
    if existing is not None:
        return existing
    lines = invoice_lines(tenant, start, end)
    number = f"INV-{start:%Y%m}-{tenant.pk:05d}"
    total = sum((line.amount for line in lines), Decimal("0.00"))
    try:
        with transaction.atomic():
            with context.public_context():
                invoice = Invoice.objects.create(
                    tenant=tenant,
                    number=number,
                    period_start=start,
                    period_end=end,
                    currency=CURRENCY,
                    total=money(total),
                    issued_at=timezone.now(),
                )
                InvoiceLine.objects.bulk_create(
                    InvoiceLine(
                        invoice=invoice,
                        position=index,
                        description=line.description[:200],
                        meter=line.meter,
                        quantity=line.quantity,
                        unit=line.unit,
                        unit_price=line.unit_price.quantize(Decimal("0.000001")),
                        amount=line.amount,
                    )
                    for index, line in enumerate(lines, start=1)
                )
            with context.tenant_context(tenant):
                audit.record(
                    actor=actor,
                    action="invoice.issued",
                    resource_type="invoice",
                    resource_id=number,
                    details={"total": str(invoice.total), "currency": CURRENCY},
                )
    except IntegrityError:  # another run closed it meanwhile
        with context.public_context():
            return Invoice.objects.get(tenant_id=tenant.pk, period_start=start)
    return invoice


def close_billing_period(*, actor: Actor, year: int, month: int) -> list[Invoice]:
    """Roll the ledger up, then close the month for every organization (idempotent)."""
    from tenants.models import Tenant, TenantStatus

    if actor.kind != "system":
        raise PermissionDenied("Only the platform closes billing periods.")
    with context.public_context():
        ledger.rollup()
        tenants = list(
            Tenant.objects.select_related("plan")
            .filter(status__in=[TenantStatus.ACTIVE, TenantStatus.SUSPENDED])
            .exclude(schema_name="public")
            .order_by("pk")
        )
    return [invoice_close(actor=actor, tenant=tenant, year=year, month=month) for tenant in tenants]


def plan_change_record(
    *, tenant: Any, plan: Any, changed_by: str, at: datetime | None = None
) -> None:
    """Note that `tenant` is on `plan` from `at` (in the caller's transaction)."""
    with context.public_context():
        PlanChange.objects.create(
            tenant_id=tenant.pk, plan=plan, at=at or timezone.now(), changed_by=changed_by[:254]
        )

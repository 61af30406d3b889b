"""Reads of the usage ledger: reports per meter (PostgreSQL plus the live hours in Redis), totals
for quotas, the meters an organization has."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import connection
from django.utils import timezone

from billing import ledger
from billing.models import Aggregation, Meter
from core.actors import Actor
from tenants import context

ROWS_SQL = (
    "SELECT hour, groups, value FROM public.billing_usagebucket "
    "WHERE tenant_id = %s AND meter = %s AND hour >= %s AND hour < %s"
)
GRANULARITIES = {"hour": timedelta(hours=1), "day": timedelta(days=1)}
MAX_RANGE = {"hour": timedelta(days=93), "day": timedelta(days=367)}


@dataclass(frozen=True)
class MeterInfo:
    slug: str
    name: str
    unit: str
    aggregation: str
    is_builtin: bool
    event_type: str = ""
    value_path: str = ""
    group_by: tuple[str, ...] = ()


def _require(actor: Actor, permission: str) -> None:
    if not actor.can(permission):
        raise PermissionDenied(f"This needs the “{permission}” permission.")


def meters_list(*, actor: Actor) -> list[MeterInfo]:
    """The built-in meters, then the organization's own."""
    _require(actor, "usage:read")
    tenant = context.require_tenant()
    meters = [
        MeterInfo(m.slug, m.name, m.unit, m.aggregation, True, group_by=m.group_keys)
        for m in ledger.BUILTIN_METERS.values()
    ]
    with context.public_context():
        own = list(Meter.objects.filter(tenant_id=tenant.pk))
    for meter in own:
        meters.append(
            MeterInfo(
                meter.slug,
                meter.name,
                meter.unit,
                meter.aggregation,
                False,
                meter.event_type,
                meter.value_path,
                tuple(meter.group_by),
            )
        )
    return meters


def meter_get(*, actor: Actor, slug: str) -> MeterInfo:
    for meter in meters_list(actor=actor):
        if meter.slug == slug:
            return meter
    raise Meter.DoesNotExist


def _rows(
    tenant: Any, meter: str, start: datetime, end: datetime
) -> list[tuple[datetime, dict[str, str], int]]:
    """Every (hour, groups, value) of `meter` in [start, end): PostgreSQL plus live hours."""
    # Schema-qualified, so a report from an organization's context needs no search_path switch.
    with connection.cursor() as cursor:
        cursor.execute(ROWS_SQL, [tenant.pk, meter, ledger.hour_of(start), end])
        # Django's psycopg set-up may hand jsonb back as text (JSONField decodes it itself).
        rows = [
            (hour, groups if isinstance(groups, dict) else json.loads(groups), int(value))
            for hour, groups, value in cursor.fetchall()
        ]
    prefix = f"{meter}\t"
    for hour, fields in ledger.live_hashes(
        str(tenant.public_id), ledger.hour_of(start), end
    ).items():
        for name, value in fields.items():
            if name.startswith(prefix):
                rows.append((hour, json.loads(name[len(prefix) :]), value))
    return rows


def meter_rows(
    *, tenant: Any, meter: str, start: datetime, end: datetime
) -> list[tuple[datetime, dict[str, str], int]]:
    """Every (hour, groups, value) of a meter in [start, end): what invoices price."""
    return _rows(tenant, meter, start, end)


def _combine(values: list[int], aggregation: str) -> int:
    if not values:
        return 0
    return max(values) if aggregation == Aggregation.MAX else sum(values)


def meter_total(*, tenant: Any, meter: str, start: datetime, end: datetime) -> int:
    """A meter's total over [start, end) for quotas: the same numbers as the reports."""
    aggregation = ledger.BUILTIN_METERS[meter].aggregation if meter in ledger.BUILTIN_METERS else ""
    return _combine([value for _, _, value in _rows(tenant, meter, start, end)], aggregation)


@dataclass
class Report:
    meter: MeterInfo
    granularity: str
    start: datetime
    end: datetime
    group_by: str | None
    buckets: list[dict[str, Any]] = field(default_factory=list)
    total: int = 0


def _floor(moment: datetime, granularity: str) -> datetime:
    moment = moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    return moment.replace(hour=0) if granularity == "day" else moment


def usage_report(
    *,
    actor: Actor,
    meter: str,
    start: datetime | None = None,
    end: datetime | None = None,
    granularity: str = "day",
    group_by: str | None = None,
) -> Report:
    """Buckets of `meter` between `start` and `end` (default: this month so far), the current
    hour included live; with `group_by`, each bucket's value per group."""
    info = meter_get(actor=actor, slug=meter)
    tenant = context.require_tenant()
    now = timezone.now()
    if granularity not in GRANULARITIES:
        raise ValidationError({"granularity": ["One of: hour, day."]})
    if group_by is not None and group_by not in info.group_by:
        choices = ", ".join(info.group_by) or "none for this meter"
        raise ValidationError({"group_by": [f"One of the meter's groups: {choices}."]})
    start = start or now.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = end or now
    if start.tzinfo is None or end.tzinfo is None:
        raise ValidationError({"start": ["Give times with their UTC offset."]})
    if end <= start:
        raise ValidationError({"end": ["The end must be after the start."]})
    if end - start > MAX_RANGE[granularity]:
        days = MAX_RANGE[granularity].days
        raise ValidationError({"end": [f"At most {days} days at {granularity} granularity."]})
    step = GRANULARITIES[granularity]
    first = _floor(start, granularity)
    series: dict[datetime, list[int]] = {}
    groups: dict[datetime, dict[str, list[int]]] = {}
    for hour, row_groups, value in _rows(tenant, meter, first, end):
        bucket = _floor(hour, granularity)
        series.setdefault(bucket, []).append(value)
        if group_by is not None:
            name = str(row_groups.get(group_by, ""))
            groups.setdefault(bucket, {}).setdefault(name, []).append(value)
    report = Report(info, granularity, first, end, group_by)
    bucket = first
    all_values: list[int] = []
    while bucket < end:
        values = series.get(bucket, [])
        entry: dict[str, Any] = {
            "start": bucket,
            "end": bucket + step,
            "value": _combine(values, info.aggregation),
        }
        if group_by is not None:
            entry["groups"] = {
                name: _combine(group_values, info.aggregation)
                for name, group_values in sorted(groups.get(bucket, {}).items())
            }
        report.buckets.append(entry)
        all_values += values
        bucket += step
    report.total = _combine(all_values, info.aggregation)
    return report


def monthly_quotas() -> dict[str, int]:
    """The current organization's monthly quotas per meter: the plan's messages, or staff's
    override of them (the same number the gateway enforces)."""
    tenant = context.require_tenant()
    override = getattr(tenant, "messages_per_month_override", None)
    return {
        "gateway_messages": override if override is not None else tenant.plan.messages_per_month
    }


@dataclass(frozen=True)
class MeterSummary:
    meter: MeterInfo
    used: int
    quota: int | None


def usage_summary(*, actor: Actor, quotas: dict[str, int]) -> list[MeterSummary]:
    """Every meter's total for the current month, beside its monthly quota where one is set."""
    tenant = context.require_tenant()
    now = timezone.now()
    start = now.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    summary = []
    for meter in meters_list(actor=actor):
        used = _combine(
            [value for _, _, value in _rows(tenant, meter.slug, start, now)], meter.aggregation
        )
        summary.append(MeterSummary(meter, used, quotas.get(meter.slug)))
    return summary


def invoice_list(*, actor: Actor) -> list[Any]:
    """The current organization's invoices, newest first, with their lines."""
    from billing.models import Invoice

    _require(actor, "billing:read")
    tenant = context.require_tenant()
    with context.public_context():
        return list(Invoice.objects.filter(tenant_id=tenant.pk).prefetch_related("lines"))


def invoice_get(*, actor: Actor, number: str) -> Any:
    """One invoice of the current organization (DoesNotExist for another's, as for none)."""
    from billing.models import Invoice

    _require(actor, "billing:read")
    tenant = context.require_tenant()
    with context.public_context():
        return Invoice.objects.prefetch_related("lines").get(tenant_id=tenant.pk, number=number)

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
from core.errors import field_error
from tenants import context

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


_BUCKET = {
    "hour": "hour",
    "day": "date_trunc('day', hour AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'",
    None: "NULL::timestamptz",
}
_GROUP = {True: "groups ->> %s", False: "NULL::text"}
_AGGREGATE = {True: "MAX(value)", False: "SUM(value)"}
# Every variant of the one aggregate query, built from the fixed fragments above only.
_QUERIES = {
    (granularity, grouped, is_max): (
        f"SELECT {_BUCKET[granularity]} AS bucket, {_GROUP[grouped]} AS grp, "  # noqa: S608 # nosec B608
        f"{_AGGREGATE[is_max]} FROM public.billing_usagebucket "
        "WHERE tenant_id = %s AND meter = %s AND hour >= %s AND hour < %s GROUP BY 1, 2"
    )
    for granularity in _BUCKET
    for grouped in (True, False)
    for is_max in (True, False)
}


def _floor(moment: datetime, granularity: str | None) -> datetime | None:
    if granularity is None:
        return None
    moment = moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    return moment.replace(hour=0) if granularity == "day" else moment


def _aggregate(
    tenant: Any,
    meter: str,
    start: datetime,
    end: datetime,
    *,
    aggregation: str,
    granularity: str | None = None,
    group_by: str | None = None,
) -> dict[tuple[datetime | None, str | None], int]:
    """(bucket, group) -> value of `meter` over the hours in [start, end): PostgreSQL aggregates
    the rolled-up hours (schema-qualified: no search_path switch from an organization's context),
    the hours still in Redis are added here."""
    is_max = aggregation == Aggregation.MAX
    sql = _QUERIES[(granularity, group_by is not None, is_max)]
    params: list[Any] = [group_by] if group_by is not None else []
    params += [tenant.pk, meter, ledger.hour_of(start), end]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        found: dict[tuple[datetime | None, str | None], int] = {
            (_floor(bucket, granularity) if bucket else None, group): int(value)
            for bucket, group, value in cursor.fetchall()
        }
    prefix = f"{meter}\t"
    live = ledger.live_hashes(str(tenant.public_id), ledger.hour_of(start), end)
    for hour, fields in live.items():
        for name, value in fields.items():
            if not name.startswith(prefix):
                continue
            group = None
            if group_by is not None:
                raw = json.loads(name[len(prefix) :]).get(group_by)
                group = None if raw is None else str(raw)
            key = (_floor(hour, granularity), group)
            if key in found:
                found[key] = max(found[key], value) if is_max else found[key] + value
            else:
                found[key] = value
    return found


def _aggregation_of(tenant: Any, meter: str) -> str:
    if meter in ledger.BUILTIN_METERS:
        return ledger.BUILTIN_METERS[meter].aggregation
    with context.public_context():
        custom = Meter.objects.filter(tenant_id=tenant.pk, slug=meter).first()
    return custom.aggregation if custom is not None else Aggregation.SUM


def meter_total(*, tenant: Any, meter: str, start: datetime, end: datetime) -> int:
    """A meter's total over [start, end) for quotas and invoices: the reports' numbers."""
    aggregation = _aggregation_of(tenant, meter)
    values = list(_aggregate(tenant, meter, start, end, aggregation=aggregation).values())
    return _combine(values, aggregation)


def meter_group_totals(
    *, tenant: Any, meter: str, start: datetime, end: datetime, group_by: str
) -> dict[str, int]:
    """A meter's totals per value of one group key (empty string: events without it)."""
    aggregation = _aggregation_of(tenant, meter)
    totals: dict[str, list[int]] = {}
    found = _aggregate(tenant, meter, start, end, aggregation=aggregation, group_by=group_by)
    for (_, group), value in found.items():
        totals.setdefault(group or "", []).append(value)
    return {group: _combine(values, aggregation) for group, values in totals.items()}


def _combine(values: list[int], aggregation: str) -> int:
    if not values:
        return 0
    return max(values) if aggregation == Aggregation.MAX else sum(values)


@dataclass
class Report:
    meter: MeterInfo
    granularity: str
    start: datetime
    end: datetime
    group_by: str | None
    buckets: list[dict[str, Any]] = field(default_factory=list)
    total: int = 0


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
        raise field_error("group_by", f"One of the meter's groups: {choices}.", "unknown_group")
    start = start or now.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = end or now
    if start.tzinfo is None or end.tzinfo is None:
        raise ValidationError({"start": ["Give times with their UTC offset."]})
    if end <= start:
        raise field_error("end", "The end must be after the start.", "invalid_range")
    if end - start > MAX_RANGE[granularity]:
        days = MAX_RANGE[granularity].days
        message = f"At most {days} days at {granularity} granularity."
        raise field_error("end", message, "invalid_range")
    step = GRANULARITIES[granularity]
    first = _floor(start, granularity)
    found = _aggregate(
        tenant,
        meter,
        first,
        end,
        aggregation=info.aggregation,
        granularity=granularity,
        group_by=group_by,
    )
    series: dict[datetime, list[int]] = {}
    groups: dict[datetime, dict[str, list[int]]] = {}
    for (bucket, group), value in found.items():
        series.setdefault(bucket, []).append(value)
        if group_by is not None:
            groups.setdefault(bucket, {}).setdefault(group or "", []).append(value)
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
    if override is None:
        with context.public_context():
            override = tenant.plan.messages_per_month
    return {"gateway_messages": override}


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
        found = _aggregate(tenant, meter.slug, start, now, aggregation=meter.aggregation)
        used = _combine(list(found.values()), meter.aggregation)
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

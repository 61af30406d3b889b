"""Reads of the usage ledger: reports per meter (PostgreSQL plus the live hours in Redis), totals
for quotas, the meters an organization has."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import connection
from django.utils import timezone

from billing import ledger, limits, pricing
from billing.models import Aggregation, Budget, Meter
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


# UNIQUE_COUNT meters: distinct values per (bucket, group), per bucket, per group and over the
# whole range, in one query (GROUPING(b, g): 0, 1, 2, 3 respectively).
_DISTINCT = {
    (granularity, grouped): (
        "SELECT b, g, COUNT(DISTINCT value), GROUPING(b, g) FROM ("  # noqa: S608 # nosec B608
        f"SELECT {_BUCKET[granularity]} AS b, {_GROUP[grouped]} AS g, value "
        "FROM public.billing_usagedistinct "
        "WHERE tenant_id = %s AND meter = %s AND hour >= %s AND hour < %s) AS d "
        "GROUP BY GROUPING SETS ((b, g), (b), (g), ())"
    )
    for granularity in _BUCKET
    for grouped in (True, False)
}
# Which of the live hours' values PostgreSQL holds already, and where.
_DISTINCT_SEEN = {
    (granularity, grouped): (
        f"SELECT {_BUCKET[granularity]}, {_GROUP[grouped]}, value "  # noqa: S608 # nosec B608
        "FROM public.billing_usagedistinct "
        "WHERE tenant_id = %s AND meter = %s AND hour >= %s AND hour < %s AND value = ANY(%s)"
    )
    for granularity in _BUCKET
    for grouped in (True, False)
}
BUCKET_GROUP, BUCKET, GROUP, TOTAL = 0, 1, 2, 3
_TOTAL = (TOTAL, None, None)


def _scopes(bucket: datetime | None, group: str | None) -> tuple[tuple, ...]:
    return (
        (BUCKET_GROUP, bucket, group),
        (BUCKET, bucket, None),
        (GROUP, None, group),
        (TOTAL, None, None),
    )


def _distinct(
    tenant: Any,
    meter: str,
    start: datetime,
    end: datetime,
    *,
    granularity: str | None = None,
    group_by: str | None = None,
) -> dict[tuple[int, datetime | None, str | None], int]:
    """Exact distinct counts of a UNIQUE_COUNT meter over the hours in [start, end): keyed
    (BUCKET_GROUP, bucket, group), (BUCKET, bucket, None), (GROUP, None, group) and
    (TOTAL, None, None). PostgreSQL counts the rolled-up hours; a value of the live hours in
    Redis adds one to a scope unless PostgreSQL already holds it there."""
    first = ledger.hour_of(start)
    grouped = group_by is not None
    params: list[Any] = [group_by] if grouped else []
    params += [tenant.pk, meter, first, end]
    with connection.cursor() as cursor:
        cursor.execute(_DISTINCT[(granularity, grouped)], params)
        counts = {
            (kind, _floor(bucket, granularity) if bucket else None, group): int(value)
            for bucket, group, value, kind in cursor.fetchall()
        }
    live: dict[tuple, set[str]] = {}
    for hour, groups, value in ledger.live_distinct(str(tenant.public_id), meter, first, end):
        group = None
        if grouped:
            raw = json.loads(groups or "{}").get(group_by)
            group = None if raw is None else str(raw)
        for scope in _scopes(_floor(hour, granularity), group):
            live.setdefault(scope, set()).add(value)
    if not live:
        return counts
    seen: dict[tuple, set[str]] = {}
    with connection.cursor() as cursor:
        cursor.execute(_DISTINCT_SEEN[(granularity, grouped)], [*params, sorted(live[_TOTAL])])
        for bucket, group, value in cursor.fetchall():
            for scope in _scopes(_floor(bucket, granularity) if bucket else None, group):
                seen.setdefault(scope, set()).add(value)
    for scope, values in live.items():
        counts[scope] = counts.get(scope, 0) + len(values - seen.get(scope, set()))
    return counts


def _aggregation_of(tenant: Any, meter: str) -> str:
    if meter in ledger.BUILTIN_METERS:
        return ledger.BUILTIN_METERS[meter].aggregation
    with context.public_context():
        custom = Meter.objects.filter(tenant_id=tenant.pk, slug=meter).first()
    return custom.aggregation if custom is not None else Aggregation.SUM


def meter_total(*, tenant: Any, meter: str, start: datetime, end: datetime) -> int:
    """A meter's total over [start, end) for quotas and invoices: the reports' numbers."""
    aggregation = _aggregation_of(tenant, meter)
    if aggregation == Aggregation.UNIQUE_COUNT:
        return _distinct(tenant, meter, start, end).get(_TOTAL, 0)
    values = list(_aggregate(tenant, meter, start, end, aggregation=aggregation).values())
    return _combine(values, aggregation)


def meter_group_totals(
    *, tenant: Any, meter: str, start: datetime, end: datetime, group_by: str
) -> dict[str, int]:
    """A meter's totals per value of one group key (empty string: events without it)."""
    aggregation = _aggregation_of(tenant, meter)
    if aggregation == Aggregation.UNIQUE_COUNT:
        counts = _distinct(tenant, meter, start, end, group_by=group_by)
        return {group or "": value for (kind, _, group), value in counts.items() if kind == GROUP}
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
    if info.aggregation == Aggregation.UNIQUE_COUNT:
        return _distinct_report(Report(info, granularity, first, end, group_by), tenant, step)
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


def _distinct_report(report: Report, tenant: Any, step: timedelta) -> Report:
    """A UNIQUE_COUNT meter's report: each bucket, each group and the total counted distinct
    over its own span (never summed from hours)."""
    counts = _distinct(
        tenant,
        report.meter.slug,
        report.start,
        report.end,
        granularity=report.granularity,
        group_by=report.group_by,
    )
    groups: dict[datetime, dict[str, int]] = {}
    for (kind, bucket, group), value in counts.items():
        if kind == BUCKET_GROUP and report.group_by is not None:
            groups.setdefault(bucket, {})[group or ""] = value
    bucket = report.start
    while bucket < report.end:
        entry: dict[str, Any] = {
            "start": bucket,
            "end": bucket + step,
            "value": counts.get((BUCKET, bucket, None), 0),
        }
        if report.group_by is not None:
            entry["groups"] = dict(sorted(groups.get(bucket, {}).items()))
        report.buckets.append(entry)
        bucket += step
    report.total = counts.get(_TOTAL, 0)
    return report


def monthly_quotas() -> dict[str, int]:
    """The current organization's monthly quotas per meter: the plan's messages (or staff's
    override of them) and the plan's quotas on other meters (the numbers that are enforced)."""
    tenant = context.require_tenant()
    return {meter: quota.limit for meter, quota in limits.monthly_quotas(tenant).items()}


_SPEND = (
    "SELECT meter, groups ->> 'model', groups ->> %s, SUM(value) FROM public.billing_usagebucket "
    "WHERE tenant_id = %s AND hour >= %s AND hour < %s AND groups ? %s GROUP BY 1, 2, 3"
)


def subject_spend(
    *, tenant: Any, subject_type: str, start: datetime, end: datetime
) -> dict[str, Decimal]:
    """What each API key (or agent) spent over [start, end): its metered usage (the ledger's
    `api_key`/`agent` groups) at the price table's prices, in billing.pricing.CURRENCY. The
    budgets' counters are seeded from it."""
    quantities: dict[tuple[str, str, str], int] = {}
    with connection.cursor() as cursor:
        cursor.execute(_SPEND, [subject_type, tenant.pk, ledger.hour_of(start), end, subject_type])
        for meter, model, subject, value in cursor.fetchall():
            key = (meter, model or "", subject)
            quantities[key] = quantities.get(key, 0) + int(value)
    live = ledger.live_hashes(str(tenant.public_id), ledger.hour_of(start), end)
    for fields in live.values():
        for name, value in fields.items():
            meter, groups = ledger.parse_field(name)
            if subject_type in groups:
                key = (meter, groups.get("model", ""), str(groups[subject_type]))
                quantities[key] = quantities.get(key, 0) + value
    with context.public_context():
        max_meters = set(
            Meter.objects.filter(tenant_id=tenant.pk, aggregation=Aggregation.MAX).values_list(
                "slug", flat=True
            )
        )
    table, plan = pricing.prices(), limits.plan_of(tenant.plan_id)
    spend: dict[str, Decimal] = {}
    for (meter, model, subject), quantity in quantities.items():
        if meter in max_meters:
            continue  # a maximum is no sum of costs: budgets charge summed meters only
        cost = quantity * pricing.unit_price(table, plan, meter, model)
        spend[subject] = spend.get(subject, Decimal(0)) + cost
    return spend


@dataclass(frozen=True)
class BudgetView:
    budget: Any
    spent: Decimal
    projected: Decimal

    @property
    def percent(self) -> int:
        if not self.budget.amount:
            return 100
        return min(100, int(self.spent * 100 / self.budget.amount))


def month_progress(now: datetime) -> tuple[datetime, Decimal]:
    """The month's start and how much of it has passed (0 to 1): projections divide by it."""
    start = now.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    following = (start + timedelta(days=32)).replace(day=1)
    elapsed = Decimal((now - start).total_seconds()) / Decimal((following - start).total_seconds())
    return start, max(elapsed, Decimal("0.000001"))


def period_spend(*, actor: Actor, subject_type: str) -> dict[str, tuple[Decimal, Decimal]]:
    """Each key's (or agent's) cost this month so far and projected to the month's end."""
    _require(actor, "usage:read")
    tenant = context.require_tenant()
    now = timezone.now()
    start, elapsed = month_progress(now)
    spend = subject_spend(tenant=tenant, subject_type=subject_type, start=start, end=now)
    return {subject: (cost, cost / elapsed) for subject, cost in spend.items()}


def budgets(*, actor: Actor) -> list[Budget]:
    """The organization's budgets, oldest first."""
    _require(actor, "usage:read")
    tenant = context.require_tenant()
    with context.public_context():
        return list(Budget.objects.filter(tenant_id=tenant.pk).order_by("id"))


def budget_list(*, actor: Actor) -> list[BudgetView]:
    """The organization's budgets with what their key or agent spent this month, and the
    projection to the month's end."""
    budgets_found = budgets(actor=actor)
    spend = {
        subject_type: period_spend(actor=actor, subject_type=subject_type)
        for subject_type in {budget.subject_type for budget in budgets_found}
    }
    zero = (Decimal(0), Decimal(0))
    return [
        BudgetView(budget, *spend[budget.subject_type].get(budget.subject_id, zero))
        for budget in budgets_found
    ]


def budget_get(*, actor: Actor, budget_id: int) -> BudgetView:
    """One budget of the current organization (Budget.DoesNotExist for another's, as for none)."""
    for view in budget_list(actor=actor):
        if view.budget.pk == budget_id:
            return view
    raise Budget.DoesNotExist


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
        if meter.aggregation == Aggregation.UNIQUE_COUNT:
            used = _distinct(tenant, meter.slug, start, now).get(_TOTAL, 0)
        else:
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


# Staff's temporary limits and the month's alerts, as the Usage and Billing pages show them ------


@dataclass(frozen=True)
class OverrideView:
    """One of staff's temporary limits in force for the organization, beside what it replaces."""

    target: str  # the resource or the meter
    is_quota: bool
    limit: int
    window_seconds: int
    plan_limit: str  # what the plan (or the platform's settings) sets, for the page
    expires_at: datetime
    reason: str


def limit_overrides(*, actor: Actor) -> list[OverrideView]:
    """Staff's unexpired overrides of the current organization's limits (the ones enforced)."""
    if not (actor.can("usage:read") or actor.can("billing:read")):
        raise PermissionDenied("This needs the “usage:read” permission.")
    tenant = context.require_tenant()
    per_resource = limits.plan_limits(tenant.plan_id)
    views = []
    for override in limits.overrides_of(tenant.pk).values():
        plan = per_resource.get(override.target)
        views.append(
            OverrideView(
                override.target,
                False,
                override.limit,
                override.window_seconds,
                rate_display(*plan) if plan else "the platform's settings",
                override.expires_at,
                override.reason,
            )
        )
    plan_quotas = limits.plan_quotas(tenant)
    for override in limits.quota_overrides_of(tenant.pk).values():
        quota = plan_quotas.get(override.target)
        views.append(
            OverrideView(
                override.target,
                True,
                override.limit,
                0,
                f"{quota.limit:,} a month ({'hard' if quota.is_hard else 'soft'})"
                if quota
                else "none",
                override.expires_at,
                override.reason,
            )
        )
    return sorted(views, key=lambda view: (view.is_quota, view.target))


def rate_display(limit: int, seconds: int) -> str:
    unit = {1: "a second", 60: "a minute", 3600: "an hour", 86400: "a day"}.get(
        seconds, f"per {seconds:,} s"
    )
    return f"{limit:,} {unit}"


def usage_alerts(*, actor: Actor, limit: int = 20) -> list[dict[str, Any]]:
    """This month's `usage.alert` events (quotas and budgets at 80% and 100%), newest first,
    from the organization's audit log."""
    from audit.models import AuditEvent

    _require(actor, "usage:read")
    context.require_tenant()
    start, _ = month_progress(timezone.now())
    rows = (
        AuditEvent.objects.filter(action="usage.alert", occurred_at__gte=start)
        .order_by("-occurred_at", "-id")
        .values("occurred_at", "resource_type", "details")[:limit]
    )
    return [
        {"at": row["occurred_at"], "kind": row["resource_type"], **row["details"]} for row in rows
    ]

"""Plan limits per resource, what each resource does when Redis cannot be reached, and headers.

- `api`: every API call but sign-in, per organization; the plan's `requests_per_minute` per 60 s.
  Redis unreachable: fails open, the request metered in PostgreSQL instead.
- `tasks`: `POST /api/v1/tasks/`, per organization; a PlanLimit. Fails open likewise.
- `publish`: gateway messages, per organization (and per connection, a setting); a PlanLimit.
  Fails closed (the channel layer that would deliver the message is Redis too).
- `usage_events`: reported usage, per organization; a PlanLimit. Fails closed (de-duplication
  needs Redis; the runtime retries).

`auth` (sign-in per address and per account) and `export` (audit exports) are counted by the same
primitive in the layers below (credentials, accounts, audit) with platform settings, and fail
closed; staff's overrides reach them through `tenants.ratelimit.register_override`.

Every cache here is per process, read again in each new period of TTL_SECONDS (`period()`: an
entry read at any moment of a period is read again in the next), and dropped in every process at
once when staff change a limit (`forget_everywhere`, through tenants.invalidation). `stamp()`
changes whenever anything cached here may have: what was built from these caches (billing's
prepared calls) is reused while it has not.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.utils import timezone

from billing.models import Budget, PlanLimit, PlanQuota, Resource
from tenants import context, invalidation, ratelimit

FAIL_CLOSED = frozenset({Resource.PUBLISH, Resource.USAGE_EVENTS})
# Fallbacks for a plan without a row (a plan staff added later): per organization, per window.
DEFAULTS = {
    Resource.TASKS: (600, 60),
    Resource.PUBLISH: (1000, 1),
    Resource.USAGE_EVENTS: (600, 60),
}
# Plans change rarely; limits are read at most once per period of this length per process.
TTL_SECONDS = 30.0
_cache: dict[int, tuple[int, dict[str, tuple[int, int]]]] = {}
# Bumped when a cache is dropped in this process (forget, forget_budgets, billing.pricing.forget).
_generation = 0
# Periods count from when this process started or last forgot everything (so a fresh start has
# a whole period ahead; processes do not all read again at once), and never repeat a number.
_origin = (time.monotonic(), 0)


def period() -> int:
    """The current period of TTL_SECONDS: an entry read in an earlier one is read again."""
    start, first = _origin
    return first + int((time.monotonic() - start) // TTL_SECONDS)


def stamp() -> tuple[int, int]:
    """Equal to an earlier value only while nothing cached here can have been read again or
    dropped since (the same period, nothing forgotten)."""
    return (period(), _generation)


def changed() -> None:
    """A cache was dropped in this process: what was built from the caches is built again."""
    global _generation
    _generation += 1


@dataclass(frozen=True)
class Limit:
    resource: str
    limit: int
    window_seconds: int

    @property
    def fail_closed(self) -> bool:
        return self.resource in FAIL_CLOSED


def plan_limits(plan_id: int) -> dict[str, tuple[int, int]]:
    """resource -> (limit, window seconds) for a plan, cached for the period."""
    from tenants.models import Plan

    now = period()
    cached = _cache.get(plan_id)
    if cached is not None and cached[0] == now:
        return cached[1]
    limits = dict(DEFAULTS)
    with context.public_context():
        limits[Resource.API] = (Plan.objects.get(pk=plan_id).requests_per_minute, 60)
        for row in PlanLimit.objects.filter(plan_id=plan_id):
            limits[row.resource] = (row.limit, row.window_seconds)
    _cache[plan_id] = (now, limits)
    return limits


def forget() -> None:
    """Drop this process's cached limits (staff changed them; tests); a new period starts."""
    global _origin
    _cache.clear()
    _overrides.clear()
    _cached.clear()
    _origin = (time.monotonic(), period() + 1)
    changed()


INVALIDATION_TOPIC = "billing-limits"


def forget_everywhere() -> None:
    """Drop the cached limits here and in every other process (after a commit that changed
    them): an override or a plan's limit bites at the next request everywhere."""
    invalidation.publish(INVALIDATION_TOPIC)


def forget_on_commit() -> None:
    """Inside a transaction that changes limits: here now, everywhere after it commits."""
    from django.db import transaction

    forget()
    transaction.on_commit(forget_everywhere)


invalidation.register(INVALIDATION_TOPIC, forget)


_cached: dict[tuple[str, Any], tuple[int, Any]] = {}


def _read(kind: str, key: Any, load: Callable[[], Any]) -> Any:
    """`load()` in the public schema, remembered for the rest of the period per process."""
    now = period()
    cached = _cached.get((kind, key))
    if cached is None or cached[0] != now:
        with context.public_context():
            cached = (now, load())
        _cached[(kind, key)] = cached
    return cached[1]


@dataclass(frozen=True)
class MonthlyQuota:
    """A monthly quota on a meter: past `limit`, refused when `is_hard`, else only alerted."""

    meter: str
    limit: int
    is_hard: bool = True

    @property
    def name(self) -> str:
        return f"{self.meter}_per_month"


def plan_of(plan_id: int) -> Any:
    """The plan row (its message price and quotas), cached like its limits."""
    from tenants.models import Plan

    return _read("plan", plan_id, lambda: Plan.objects.get(pk=plan_id))


def plan_quotas(tenant) -> dict[str, MonthlyQuota]:  # noqa: ANN001 - a tenants.models.Tenant
    """The plan's monthly quotas, per meter: its messages (or the organization's standing
    `messages_per_month_override`) and its quotas on other meters. Built once per organization,
    plan and override and cached (the request path reads it on every call): callers must not
    change it."""
    override = getattr(tenant, "messages_per_month_override", None)

    def load() -> dict[str, MonthlyQuota]:
        rows = PlanQuota.objects.filter(plan_id=tenant.plan_id).values_list(
            "meter", "limit", "is_hard"
        )
        quotas = {meter: MonthlyQuota(meter, limit, is_hard) for meter, limit, is_hard in rows}
        messages = override if override is not None else plan_of(tenant.plan_id).messages_per_month
        quotas["gateway_messages"] = MonthlyQuota("gateway_messages", messages, True)
        return quotas

    return _read("quotas", (tenant.pk, tenant.plan_id, override), load)


def monthly_quotas(tenant) -> dict[str, MonthlyQuota]:  # noqa: ANN001 - a tenants.models.Tenant
    """Every monthly quota in force, per meter: the plan's (`plan_quotas`), with staff's
    unexpired overrides in place of theirs (a quota keeps its kind; hard where the plan has
    none). Callers must not change it."""
    quotas = plan_quotas(tenant)
    temporary = quota_overrides_of(tenant.pk)
    if not temporary:
        return quotas  # the usual case, on every request
    quotas = dict(quotas)
    for meter, found in temporary.items():
        plan_quota = quotas.get(meter)
        quotas[meter] = MonthlyQuota(meter, found.limit, plan_quota.is_hard if plan_quota else True)
    return quotas


def forget_budgets(tenant_id: int) -> None:
    _cached.pop(("budgets", tenant_id), None)
    changed()


def budgets_of(tenant_id: int) -> dict[tuple[str, str], Budget]:
    """The organization's spend budgets by (subject type, subject id), cached for the period:
    a change applies at once in the process that made it and within 30 s in every other."""
    return _read(
        "budgets",
        tenant_id,
        lambda: {
            (b.subject_type, b.subject_id): b for b in Budget.objects.filter(tenant_id=tenant_id)
        },
    )


@dataclass(frozen=True)
class Override:
    """One of staff's temporary limits in force: of a resource (`limit` per `window_seconds`)
    or of a meter's monthly quota (`limit` a month)."""

    target: str  # the resource, or the meter
    is_quota: bool
    limit: int
    window_seconds: int
    expires_at: datetime
    reason: str


_overrides: dict[int, tuple[int, tuple[Override, ...]]] = {}


def _active(tenant_id: int) -> tuple[Override, ...]:
    """Staff's unexpired overrides of one organization, oldest first (a later one of the same
    target wins), cached for the period; each is dropped from the answer once it expires."""
    from billing.models import LimitOverride

    now = period()
    cached = _overrides.get(tenant_id)
    if cached is None or cached[0] != now:
        with context.public_context():
            rows = LimitOverride.objects.filter(
                tenant_id=tenant_id, expires_at__gt=timezone.now()
            ).order_by("created_at", "id")
            found = tuple(
                Override(
                    r.meter or r.resource,
                    bool(r.meter),
                    r.limit,
                    r.window_seconds,
                    r.expires_at,
                    r.reason,
                )
                for r in rows
            )
        cached = (now, found)
        _overrides[tenant_id] = cached
    if not cached[1]:
        return cached[1]  # the usual case, on every request: no override
    moment = timezone.now()
    return tuple(o for o in cached[1] if o.expires_at > moment)


def overrides_of(tenant_id: int) -> dict[str, Override]:
    """Staff's unexpired overrides of one organization's rate limits, by resource."""
    return {o.target: o for o in _active(tenant_id) if not o.is_quota}


def quota_overrides_of(tenant_id: int) -> dict[str, Override]:
    """Staff's unexpired overrides of one organization's monthly quotas, by meter."""
    active = _active(tenant_id)
    if not active:
        return {}
    return {o.target: o for o in active if o.is_quota}


def limit_for(tenant, resource: str) -> Limit:  # noqa: ANN001 - a tenants.models.Tenant
    """The limit in force: staff's unexpired override, else the plan's."""
    override = overrides_of(tenant.pk).get(resource) if _active(tenant.pk) else None
    if override is not None:
        return Limit(
            resource=resource, limit=override.limit, window_seconds=override.window_seconds
        )
    limit, window = plan_limits(tenant.plan_id)[resource]
    return Limit(resource=resource, limit=limit, window_seconds=window)


def _rate_override(tenant, resource: str) -> tuple[int, int] | None:  # noqa: ANN001
    """For tenants.ratelimit.hit: staff's override of `auth` or `export` for `tenant`."""
    if not _active(tenant.pk):
        return None
    override = overrides_of(tenant.pk).get(resource)
    return (override.limit, override.window_seconds) if override is not None else None


ratelimit.register_override(_rate_override)

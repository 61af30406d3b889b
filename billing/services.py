"""Billing's writes: admitting a request (rate limits, quotas and metering in one Redis round trip),
ingesting reported usage events, custom meters, the rollup."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from audit import services as audit
from billing import ledger, limits, pricing
from billing.ledger import Count
from billing.models import Aggregation, Budget, BudgetSubject, Meter, Resource
from core import errors
from core.actors import Actor
from core.roles import BUDGETS_MANAGE
from tenants import context, ratelimit

logger = logging.getLogger(__name__)

RATE_PREFIX = "agentplane:rl"
QUOTA_PREFIX = "agentplane:quota"
QUOTA_TTL_SECONDS = 40 * 86400
# Requests that failed open because Redis was unreachable (metered in PostgreSQL instead).
fail_open_total = 0


@dataclass(frozen=True)
class Admission:
    """What the request counted against: the RateLimit headers' policy and numbers."""

    usage: ratelimit.Usage | None

    @property
    def headers(self) -> dict[str, str]:
        if self.usage is None:
            return {}
        usage = self.usage
        policy = _policies.get((usage.name, usage.limit, usage.window))
        if policy is None:
            policy = _policy(usage)
        return {
            "RateLimit-Policy": policy[0],
            "RateLimit": f"{policy[1]}{usage.remaining};t={usage.reset}",
        }


# A policy's `RateLimit-Policy` value and the start of its `RateLimit` value, built once per
# name, limit and window (bounded): only the remaining count and the reset change per request.
_policies: dict[tuple[str, int, int], tuple[str, str]] = {}


def _policy(usage: ratelimit.Usage) -> tuple[str, str]:
    fields = errors.rate_limit_headers(usage.name, usage.limit, usage.window, 0, 0)
    policy = (fields["RateLimit-Policy"], fields["RateLimit"].removesuffix("0;t=0"))
    if len(_policies) >= PREPARED_CACHE_SIZE:
        _policies.clear()
    _policies[(usage.name, usage.limit, usage.window)] = policy
    return policy


def _window(org: str, limit: limits.Limit, key: str = "org") -> ratelimit.Window:
    return ratelimit.Window(
        key=f"{RATE_PREFIX}:{org}:{limit.resource}:{key}",
        limit=limit.limit,
        seconds=limit.window_seconds,
        name=limit.resource if key == "org" else f"{limit.resource}.key",
    )


def _windows(tenant: Any, resource: str, api_key: Any = None) -> list[ratelimit.Window]:
    """The organization's window for `resource`, and the API key's own where it has one."""
    org = str(tenant.public_id)
    windows = [_window(org, limits.limit_for(tenant, resource))]
    own = (getattr(api_key, "rate_limits", None) or {}).get(resource)
    if own is not None:
        limit = limits.Limit(resource, own["limit"], own["window_seconds"])
        windows.append(_window(org, limit, f"key:{api_key.pk}"))
    return windows


def _tightest(usages: Sequence[ratelimit.Usage]) -> ratelimit.Usage | None:
    """The policy the headers name: the one with the least remaining."""
    return min(usages, key=lambda usage: usage.remaining, default=None)


def month_label(now: datetime) -> str:
    return now.astimezone(UTC).strftime("%Y%m")


def month_start(now: datetime) -> datetime:
    return now.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)


# Script calls built once (tenants.ratelimit.Prepared), by what they count: an organization's
# requests repeat the previous request's call until the hour or a limit changes. Bounded.
PREPARED_CACHE_SIZE = 4096
_prepared: dict[tuple[Any, ...], ratelimit.Prepared] = {}


def _call(
    org: str,
    windows: Sequence[ratelimit.Window],
    counts: Sequence[Count],
    now: datetime,
    quotas: Sequence[ratelimit.Quota] = (),
    dedup_ttl_seconds: int = 7 * 86400,
) -> ratelimit.Prepared:
    signature = (
        org,  # the charges' keys carry it even when no window or quota does (usage_add)
        tuple(windows),
        tuple(quotas),
        ledger.counts_signature(counts),
        ledger.hour_number(now),
        settings.BILLING_REDIS_TTL_SECONDS,
        dedup_ttl_seconds,
    )
    prepared = _prepared.get(signature)
    if prepared is None:
        charge_list, index_sets = ledger.charges(org, counts, now)
        prepared = ratelimit.Prepared(
            windows=windows,
            quotas=quotas,
            charges=charge_list,
            index_sets=index_sets,
            hash_ttl_seconds=settings.BILLING_REDIS_TTL_SECONDS,
            dedup_ttl_seconds=dedup_ttl_seconds,
        )
        if len(_prepared) >= PREPARED_CACHE_SIZE:
            _prepared.clear()
        _prepared[signature] = prepared
    return prepared


def _seconds_to_next_month(now: datetime) -> int:
    start = month_start(now)
    following = (start + timedelta(days=32)).replace(day=1)
    return max(1, int((following - now).total_seconds()))


# Monthly quotas and spend budgets: counters checked in the request's one Lua call ------------

# A counter that is never refused: soft quotas, and usage metered after the fact (usage_add).
UNBOUNDED = 2**53 - 1
BUDGET_PREFIX = "agentplane:budget"


@dataclass(frozen=True)
class Gate:
    """A monthly counter checked and counted with the request: a plan's quota on a meter, or a
    spend budget (whole nano-units of its currency: billing.pricing)."""

    quota: ratelimit.Quota
    limit: int  # the quota, or the budget in nano-units (a soft quota's counter is unbounded)
    meter: str = ""
    budget: Budget | None = None


def budget_key(org: str, subject_type: str, subject_id: str, now: datetime) -> str:
    return f"{BUDGET_PREFIX}:{org}:{subject_type}:{subject_id}:{month_label(now)}"


def _gates(
    tenant: Any,
    counts: Sequence[Count],
    now: datetime,
    *,
    quotas: dict[str, limits.MonthlyQuota],
    enforce: bool = True,
) -> list[Gate]:
    """The month's counters `counts` move: each quota on a meter they add to, and the budget of
    each API key and agent they are grouped by, charged what they cost (billing.pricing)."""
    org = str(tenant.public_id)
    month = month_label(now)
    per_meter: dict[str, int] = {}
    for count in counts:
        if count.op == "sum":
            per_meter[count.meter] = per_meter.get(count.meter, 0) + count.amount
    gates = []
    for meter, amount in per_meter.items():
        quota = quotas.get(meter)
        if quota is None:
            continue
        bound = quota.limit if quota.is_hard and enforce else UNBOUNDED
        key = f"{QUOTA_PREFIX}:{org}:{meter}:{month}"
        counter = ratelimit.Quota(key, bound, amount, QUOTA_TTL_SECONDS, quota.name)
        gates.append(Gate(counter, quota.limit, meter))
    budgets = limits.budgets_of(tenant.pk)
    if not budgets:
        return gates
    table, plan = pricing.prices(), limits.plan_of(tenant.plan_id)
    spend: dict[tuple[str, str], int] = {}
    for count in counts:
        groups = count.groups or {}
        for subject_type in BudgetSubject.values:
            subject = (subject_type, groups.get(subject_type, ""))
            if subject in budgets and count.op == "sum":
                price = pricing.unit_price(table, plan, count.meter, groups.get("model", ""))
                spend[subject] = spend.get(subject, 0) + pricing.to_nano(count.amount * price)
    for subject, cost in spend.items():
        budget = budgets[subject]
        limit = pricing.to_nano(budget.amount)
        # What costs nothing is refused too once the budget is spent (counter at the budget).
        bound = (limit if cost else limit - 1) if enforce else UNBOUNDED
        key = budget_key(org, *subject, now)
        name = f"budget:{subject[0]}:{subject[1]}"
        counter = ratelimit.Quota(key, bound, cost, QUOTA_TTL_SECONDS, name)
        gates.append(Gate(counter, limit, budget=budget))
    return gates


def _refusal(gate: Gate, now: datetime, current: int) -> errors.DomainError:
    """The refusal of a quota or budget whose counter stands at `current` (it keeps the gate and
    the counter as `gate` and `current`: the alert of a refusal reads them)."""
    error = _refusal_of(gate, now, current)
    error.gate, error.current = gate, current  # type: ignore[attr-defined]
    return error


def _refusal_of(gate: Gate, now: datetime, current: int) -> errors.DomainError:
    state = "is spent" if current >= gate.limit else "would be passed"
    if gate.budget is not None:
        budget = gate.budget
        subject = BudgetSubject(budget.subject_type).label
        return errors.UsageExhausted(
            "budget_exceeded",
            f"The {subject}'s budget of {budget.amount} {budget.currency} for this month {state}.",
            retry_after=_seconds_to_next_month(now),
            budget={
                "id": budget.pk,
                "subject_type": budget.subject_type,
                "subject_id": budget.subject_id,
                "amount": str(budget.amount),
                "currency": budget.currency,
            },
        )
    return errors.UsageExhausted(
        "quota_exceeded",
        f"The plan's monthly quota “{gate.quota.name}” ({gate.limit:,}) "
        + ("is used up." if current >= gate.limit else "would be passed."),
        retry_after=_seconds_to_next_month(now),
        quota={"name": gate.quota.name, "meter": gate.meter, "limit": gate.limit},
    )


def _consume(
    tenant: Any,
    now: datetime,
    *,
    windows: Sequence[ratelimit.Window] = (),
    gates: Sequence[Gate] = (),
    counts: Sequence[Count] = (),
    dedup_ttl_seconds: int = 7 * 86400,
    alert_refusal: bool = True,
    prepared: ratelimit.Prepared | None = None,
    sent: ratelimit.Sent | None = None,
) -> ratelimit.Outcome:
    """One Lua call: the windows, the gates, the ledger's counts (or `prepared`, that call built
    beforehand; or `sent`, that call sent already, its reply unread). A counter missing (a new
    month, or Redis lost it) is seeded from the ledger, then the call is made again. Raises
    RateLimited, the gate's refusal, or ratelimit.Unreachable (the caller's policy applies). A
    refusal alerts at 100% (`_alert_refused`) unless `alert_refusal` is False (the caller may
    yet find it was not one)."""
    if prepared is None:
        prepared = _call(
            str(tenant.public_id),
            tuple(windows),
            counts,
            now,
            quotas=tuple(gate.quota for gate in gates),
            dedup_ttl_seconds=dedup_ttl_seconds,
        )
    for _ in range(len(gates) + 2):
        try:
            if sent is not None:
                sent, first = None, sent
                outcome = first.outcome()
            else:
                outcome = ratelimit.run(prepared)
        except ratelimit.QuotaPassed as passed:
            gate = next(g for g in gates if g.quota == passed.quota)
            refusal = _refusal(gate, now, passed.current)
            if alert_refusal:
                _alert_refused(tenant, refusal)
            raise refusal from None
        if outcome.missing_quota is None:
            _alerts(tenant, gates, outcome)
            return outcome
        _seed(tenant, next(g for g in gates if g.quota == outcome.missing_quota), now)
    raise errors.RateLimiterUnavailable  # a counter vanished again and again: Redis is flapping


def _alerts(tenant: Any, gates: Sequence[Gate], outcome: ratelimit.Outcome) -> None:
    for gate, value in zip(gates, outcome.quota_values, strict=True):
        _alert_thresholds(tenant, gate, value)


def _any_alert(gates: Sequence[Gate], outcome: ratelimit.Outcome) -> bool:
    """Whether `_alerts` has anything to do (a counter crossed a threshold): no I/O."""
    return any(
        _crossed(gate, value) for gate, value in zip(gates, outcome.quota_values, strict=True)
    )


def _seed(tenant: Any, gate: Gate, now: datetime) -> None:
    """Start a month's counter at what the ledger already holds for the month (zero on the first
    request of a month; the flushed total after Redis lost its data)."""
    from billing import selectors

    start = month_start(now)
    if gate.budget is not None:
        budget = gate.budget
        used = pricing.to_nano(
            selectors.subject_spend(
                tenant=tenant,
                subject_type=budget.subject_type,
                start=start,
                end=now,
            ).get(budget.subject_id, Decimal(0))
        )
    else:
        used = selectors.meter_total(tenant=tenant, meter=gate.meter, start=start, end=now)
    client = ratelimit.redis_client()
    if client is None:
        ratelimit.memory_set(gate.quota.key, used, gate.quota.ttl_seconds, only_if_missing=True)
    else:
        try:
            client.set(gate.quota.key, used, nx=True, ex=gate.quota.ttl_seconds)
        except ratelimit.unreachable_errors():
            raise errors.RateLimiterUnavailable from None


@dataclass(frozen=True)
class _Admission:
    """request_admit's call for one organization, resource, key and counts in one hour, with
    when it was built."""

    hour: int
    stamp: tuple[int, int]  # billing.limits.stamp() when it was built
    settings: tuple[Any, ...]  # values: the key's own limit, the ledger's TTL
    gates: list[Gate]
    prepared: ratelimit.Prepared


# Built once and reused while billing.limits' stamp is the one it was built under: its caches
# (and billing.pricing's) are read again only in a new period or after they are forgotten (a
# change in this process, or in another one through forget_everywhere), and either changes the
# stamp, so a change applies exactly when it did when every request rebuilt its call. Bounded
# like _prepared.
_admissions: dict[tuple[Any, ...], _Admission] = {}


def _admission(
    tenant: Any,
    resource: str,
    counts: Sequence[Count],
    api_key: Any,
    now: datetime,
    signature: tuple[Any, ...] | None = None,
) -> _Admission:
    """The gates and the prepared Lua call of a request of `tenant` to `resource`
    (`signature`: `counts`' ledger.counts_signature, when the caller keeps it)."""
    stamp = limits.stamp()
    values = (
        (getattr(api_key, "rate_limits", None) or {}).get(resource),
        settings.BILLING_REDIS_TTL_SECONDS,
    )
    hour = ledger.hour_number(now)
    key = (
        tenant.pk,
        tenant.plan_id,
        getattr(tenant, "messages_per_month_override", None),
        resource,
        api_key.pk if api_key is not None else None,
        ledger.counts_signature(counts),
    )
    built = _admissions.get(key)
    if (
        built is not None
        and built.stamp == stamp
        and built.hour == hour
        and built.settings == values
    ):
        return built
    overrides = limits.overrides_of(tenant.pk)
    windows = tuple(_windows(tenant, resource, api_key))
    gates = _gates(tenant, counts, now, quotas=limits.monthly_quotas(tenant))
    prepared = _call(
        str(tenant.public_id), windows, counts, now, quotas=tuple(g.quota for g in gates)
    )
    built = _Admission(hour, stamp, values, gates, prepared)
    if not overrides:  # an override expires by the clock: such calls are built every time
        if len(_admissions) >= PREPARED_CACHE_SIZE:
            _admissions.clear()
        _admissions[key] = built
    return built


def request_admit(*, resource: str, counts: Sequence[Count] = (), api_key: Any = None) -> Admission:
    """Count one request of the current organization against `resource` (and the API key's own
    limit for it), check the month's quotas and budgets, and meter `counts`.

    One Lua call. Over a limit: RateLimited (a 429 naming the policy); a quota or budget used
    up: its refusal. Redis unreachable: a fail-closed resource refuses (RateLimiterUnavailable,
    a 503); a fail-open one is let through with a warning (its quotas and budgets unchecked) and
    its `counts` added to PostgreSQL directly, so nothing is lost.
    """
    return request_admit_send(resource=resource, counts=counts, api_key=api_key).finish()


class PendingAdmission:
    """`request_admit` in two steps: its Lua call sent (`request_admit_send`), its verdict read
    by `finish()`, which answers and raises exactly what `request_admit` does. In between, the
    caller does what does not depend on the verdict (a read-only view's database work, whose
    result is dropped if `finish()` refuses) and the round trip overlaps it."""

    __slots__ = ("tenant", "resource", "counts", "now", "built", "sent")

    def __init__(
        self,
        tenant: Any,
        resource: str,
        counts: Sequence[Count],
        now: datetime,
        built: _Admission,
        sent: ratelimit.Sent,
    ) -> None:
        self.tenant, self.resource, self.counts, self.now = tenant, resource, counts, now
        self.built, self.sent = built, sent

    def finish(self) -> Admission:
        global fail_open_total
        tenant, built = self.tenant, self.built
        try:
            if not built.gates and self.sent.reply()[0] == 1:
                # Allowed, no quota or budget to alert on: the headers straight from the reply.
                return Admission(usage=ratelimit.tightest(built.prepared, self.sent.reply()))
            outcome = _consume(
                tenant,
                self.now,
                gates=built.gates,
                counts=self.counts,
                prepared=built.prepared,
                sent=self.sent,
            )
        except ratelimit.Unreachable:
            if limits.limit_for(tenant, self.resource).fail_closed:
                logger.error("rate limiter unavailable for %s: refusing", self.resource)
                raise errors.RateLimiterUnavailable from None
            fail_open_total += 1
            logger.warning("rate limit %s not enforced: Redis is unreachable", self.resource)
            if self.counts:
                ledger.add_directly(tenant.pk, self.counts, self.now)
            return Admission(usage=None)
        return Admission(usage=_tightest(outcome.usages))


def request_admit_send(
    *,
    resource: str,
    counts: Sequence[Count] = (),
    api_key: Any = None,
    signature: tuple[Any, ...] | None = None,
) -> PendingAdmission:
    """Send `request_admit`'s Lua call for the current organization and return at once; the
    PendingAdmission's `finish()` gives its verdict. Counted when it reaches Redis: a request
    whose verdict is never read still counts. A caller that repeats the same `counts` may pass
    their `signature` (ledger.counts_signature) to save building it."""
    tenant = context.require_tenant()
    now = timezone.now()
    built = _admission(tenant, resource, counts, api_key, now, signature)
    return PendingAdmission(tenant, resource, counts, now, built, ratelimit.send(built.prepared))


def usage_add(*, tenant: Any, counts: Sequence[Count]) -> None:
    """Meter platform-measured usage that no limit gates (custom tool runs and their CPU time).

    The same ledger as every other count, and the same monthly counters (their quotas alert at
    80% and 100%, budgets are charged; nothing is refused: the usage already happened). One
    Redis call; Redis unreachable, the counts go to PostgreSQL directly, so nothing is lost.
    """
    now = timezone.now()
    gates = _gates(tenant, counts, now, quotas=limits.monthly_quotas(tenant), enforce=False)
    try:
        with context.tenant_context(tenant):
            _consume(tenant, now, gates=gates, counts=counts)
    except ratelimit.Unreachable:
        logger.warning("usage of %s written to PostgreSQL: Redis is unreachable", tenant.slug)
        ledger.add_directly(tenant.pk, counts, now)


def usage_admit(
    *, tenant: Any, counts: Sequence[Count], checks: Sequence[str] = ()
) -> datetime | None:
    """Before usage that must not start past a hard quota but is otherwise metered when it is
    over (a custom tool run): with a hard quota on a meter of `counts`, or on a meter in
    `checks` (measured afterwards: a run's CPU time), one Lua call refuses it past them (429
    `quota_exceeded` naming the quota; a `checks` meter refuses once its month is used up) and
    counts `counts` on the ledger and the month's counters; returns when, so that the caller
    meters the rest with `usage_add` and gives `counts` back with `usage_refund` if the usage
    did not happen. Without a hard quota on any of them nothing is done (no round trip, the
    plan's quotas are cached): returns None, meter everything afterwards.

    Exact across processes (N allowed means N). Fails closed when Redis is unreachable (a
    503): a hard quota is not to be passed unchecked.
    """
    quotas = limits.monthly_quotas(tenant)
    wanted = {count.meter for count in counts} | set(checks)
    if not any((quota := quotas.get(meter)) is not None and quota.is_hard for meter in wanted):
        return None
    now = timezone.now()
    gates = _gates(tenant, counts, now, quotas=quotas)
    gated = {gate.meter for gate in gates}
    for meter in checks:
        quota = quotas.get(meter)
        if quota is None or not quota.is_hard or meter in gated:
            continue
        # Nothing to add yet: refused once the counter stands at the quota (bound - 1, amount 0).
        key = f"{QUOTA_PREFIX}:{tenant.public_id}:{meter}:{month_label(now)}"
        counter = ratelimit.Quota(key, quota.limit - 1, 0, QUOTA_TTL_SECONDS, quota.name)
        gates.append(Gate(counter, quota.limit, meter))
    try:
        with context.tenant_context(tenant):
            _consume(tenant, now, gates=gates, counts=counts)
    except ratelimit.Unreachable:
        logger.error("hard quotas of %s unavailable: refusing", tenant.slug)
        raise errors.RateLimiterUnavailable from None
    return now


def usage_refund(*, tenant: Any, counts: Sequence[Count], at: datetime) -> None:
    """Give back what `usage_admit` counted at `at` for usage that then did not happen (no
    sandbox worker was free): the same counts, negated, in the same hour of the ledger."""
    usage_add(
        tenant=tenant,
        counts=[
            Count(count.meter, -count.amount, count.groups, at, count.op)
            for count in counts
            if count.op == "sum"
        ],
    )


def message_admit(
    *,
    actor: Actor,
    monthly_limit: int,
    connection_id: str | None = None,
    agent_id: str | None = None,
    meters: Sequence[str] = ("gateway_messages",),
    count_publish_window: bool = True,
) -> Admission:
    """Admit one gateway message of the current organization, in one Lua call: the publish
    rate limits (per connection, per organization), the monthly quotas (`monthly_limit`
    messages), the agent's or key's budget, the counters.

    Fails closed when Redis is unreachable (the channel layer that would deliver the message is
    Redis too). Raises RateLimited, UsageExhausted (`quota_exceeded` naming the quota, the
    messages' or another; `budget_exceeded`) or RateLimiterUnavailable.
    `message_admit_async` is the same from an event loop.
    """
    ticket = message_ticket(
        actor=actor,
        monthly_limit=monthly_limit,
        connection_id=connection_id,
        agent_id=agent_id,
        meters=meters,
        count_publish_window=count_publish_window,
    )
    try:
        outcome = _consume(
            ticket.tenant,
            ticket.now,
            windows=ticket.windows,
            gates=ticket.gates,
            counts=ticket.counts,
        )
    except ratelimit.Unreachable:
        logger.error("gateway counters unavailable: refusing the message")
        raise errors.RateLimiterUnavailable from None
    return Admission(usage=outcome.usages[-1] if outcome.usages else None)


@dataclass
class MessageTicket:
    """What one connection's messages are counted against (`message_ticket`), with their Lua
    call built: reused by `message_admit_async` while `valid()`."""

    tenant: Any
    now: datetime
    windows: list[ratelimit.Window]
    gates: list[Gate]
    counts: list[Count]
    prepared: ratelimit.Prepared
    built: float

    def valid(self) -> bool:
        """Within the hour it counts into, and no older than the limits it was built from."""
        fresh = time.monotonic() - self.built < limits.TTL_SECONDS
        return fresh and ledger.hour_number(timezone.now()) == ledger.hour_number(self.now)

    def due(self) -> bool:
        """Past half its life: time to build the next one."""
        return time.monotonic() - self.built >= limits.TTL_SECONDS / 2


def message_ticket(
    *,
    actor: Actor,
    monthly_limit: int,
    connection_id: str | None = None,
    agent_id: str | None = None,
    meters: Sequence[str] = ("gateway_messages",),
    count_publish_window: bool = True,
) -> MessageTicket:
    """The windows, gates and counts of `message_admit` (its arguments), for the current
    organization; reads the plan's limits (cached), so call it where the database may be used."""
    if actor.kind == "anonymous":
        raise PermissionDenied("Sign in to publish.")
    tenant = context.require_tenant()
    org = str(tenant.public_id)
    now = timezone.now()
    windows = []
    if connection_id is not None:
        per_connection, seconds = ratelimit.parse_rate(settings.GATEWAY_PUBLISH_RATE_PER_CONNECTION)
        windows.append(
            ratelimit.Window(
                key=f"{RATE_PREFIX}:{org}:publish:connection:{connection_id}",
                limit=per_connection,
                seconds=seconds,
                name="publish.connection",
            )
        )
    if count_publish_window:
        publish = limits.limit_for(tenant, Resource.PUBLISH)
        if settings.GATEWAY_PUBLISH_RATE_PER_ORGANIZATION:
            limit, seconds = ratelimit.parse_rate(settings.GATEWAY_PUBLISH_RATE_PER_ORGANIZATION)
            publish = limits.Limit(Resource.PUBLISH, limit, seconds)
        windows.append(_window(org, publish))
    groups = {"agent": agent_id} if agent_id else None
    if groups is None and actor.kind == "api_key":
        groups = {"api_key": actor.id}
    counts = [Count(meter, 1, groups) for meter in meters]
    quotas = limits.monthly_quotas(tenant)
    if "gateway_messages" not in limits.quota_overrides_of(tenant.pk):  # staff's override wins
        quotas = {
            **quotas,
            "gateway_messages": limits.MonthlyQuota("gateway_messages", monthly_limit),
        }
    gates = _gates(tenant, counts, now, quotas=quotas)
    _seed_missing(tenant, gates, now)
    prepared = _call(org, tuple(windows), counts, now, quotas=tuple(g.quota for g in gates))
    return MessageTicket(tenant, now, windows, gates, counts, prepared, time.monotonic())


def _seed_missing(tenant: Any, gates: Sequence[Gate], now: datetime) -> None:
    """Seed the month's counters a ticket counts against before its first message. A call that
    finds its counter missing is sent again after seeding, behind the connection's later
    publishes already in flight (message_admit_async): seeded here, they are admitted in the
    order they came (a counter lost between two tickets is the rare exception)."""
    client = ratelimit.redis_client()
    if client is None:
        present = [ratelimit.memory_exists(gate.quota.key) for gate in gates]
    else:
        try:
            pipe = client.pipeline(transaction=False)
            for gate in gates:
                pipe.exists(gate.quota.key)
            present = pipe.execute()
        except ratelimit.unreachable_errors():
            return  # the message's own call fails closed
    for gate, found in zip(gates, present, strict=True):
        if not found:
            _seed(tenant, gate, now)


async def message_admit_async(
    ticket: MessageTicket, *, run_sync: Callable[..., Awaitable[Any]]
) -> Admission:
    """`message_admit` in the event loop (the gateway's publishes): the same Lua call on the
    same keys, without a thread hop (tenants.ratelimit.run_async). The rare steps that need the
    database (seeding a month's counter, a usage alert) go through `run_sync(function, *args)`,
    which runs a function where the database may be used, in the ticket's organization."""
    for _ in range(len(ticket.gates) + 2):
        try:
            outcome = await ratelimit.run_async(ticket.prepared)
        except ratelimit.QuotaPassed as passed:
            gate = next(g for g in ticket.gates if g.quota == passed.quota)
            refusal = _refusal(gate, timezone.now(), passed.current)
            if _refusal_alert_due(refusal):
                await run_sync(_alert_refused, ticket.tenant, refusal)
            raise refusal from None
        except ratelimit.Unreachable:
            logger.error("gateway counters unavailable: refusing the message")
            raise errors.RateLimiterUnavailable from None
        if outcome.missing_quota is None:
            if _any_alert(ticket.gates, outcome):
                await run_sync(_alerts, ticket.tenant, ticket.gates, outcome)
            return Admission(usage=outcome.usages[-1] if outcome.usages else None)
        gate = next(g for g in ticket.gates if g.quota == outcome.missing_quota)
        await run_sync(_seed, ticket.tenant, gate, timezone.now())
    raise errors.RateLimiterUnavailable  # a counter vanished again and again: Redis is flapping


ALERT_THRESHOLDS = (80, 100)
# Alert keys this process knows are set (their month is in them), bounded like `_prepared`.
_alerted: set[str] = set()


def _crossed(gate: Gate, used: int) -> list[int]:
    """The thresholds (percent) that this call's amount took a quota's or a budget's counter,
    now at `used`, across."""
    if gate.limit <= 0 or (not gate.meter and gate.budget is None):
        return []
    amount = gate.quota.amount
    return [p for p in ALERT_THRESHOLDS if used - amount < -(-gate.limit * p // 100) <= used]


def _alert_thresholds(tenant: Any, gate: Gate, used: int) -> None:
    """Soft alerts: the request that takes a quota's or a budget's counter across 80% or 100%
    announces it (`_alert`)."""
    for percent in _crossed(gate, used):
        _alert(tenant, gate, percent, used)


def _alert_refused(tenant: Any, refusal: errors.DomainError) -> None:
    """A hard quota or a budget that refuses a request alerts at 100% (once per month), even
    when the counter stopped short of it: a budget is seldom spent to the exact nano-unit, and
    what the owner must hear is that requests are refused."""
    gate = getattr(refusal, "gate", None)
    if gate is not None and gate.limit > 0:
        _alert(tenant, gate, 100, refusal.current, refused=True)  # type: ignore[attr-defined]


def _refusal_alert_due(refusal: errors.DomainError) -> bool:
    """Whether `_alert_refused` may have to announce (not known sent by this process): no I/O."""
    gate = getattr(refusal, "gate", None)
    return gate is not None and gate.limit > 0 and _alert_key(gate, 100) not in _alerted


def _alert_key(gate: Gate, percent: int) -> str:
    if gate.budget is not None:
        return f"{gate.quota.key}:alert:{gate.budget.pk}:{percent}"
    return f"{gate.quota.key}:alert:{percent}"


def _alert(tenant: Any, gate: Gate, percent: int, used: int, *, refused: bool = False) -> None:
    """Announce that a quota or a budget reached `percent`, once per threshold, counter (a quota
    of the organization's meter, a budget by its id) and month across every process: a Redis
    key set with NX guards it, also against a re-seeded counter crossing again. An audit event
    `usage.alert` and the same on the organization's `usage.alert` subject."""
    budget = gate.budget
    key = _alert_key(gate, percent)
    if key in _alerted:
        return  # sent (here or elsewhere) this month: refused requests cost no second call
    client = ratelimit.redis_client()
    if client is None:
        first = not ratelimit.memory_hash(key)
        if first:
            ratelimit.memory_set(key, {"sent": 1}, QUOTA_TTL_SECONDS, only_if_missing=True)
    else:
        try:
            first = bool(client.set(key, 1, nx=True, ex=QUOTA_TTL_SECONDS))
        except ratelimit.unreachable_errors():
            logger.warning("usage alert %s %s%% not sent: Redis is unreachable", key, percent)
            return
    if len(_alerted) >= PREPARED_CACHE_SIZE:
        _alerted.clear()
    _alerted.add(key)
    if not first:
        return
    period = gate.quota.key.rsplit(":", 1)[1]
    if budget is None:
        details: dict[str, Any] = {
            "meter": gate.meter,
            "threshold_percent": percent,
            "used": used,
            "quota": gate.limit,
            "period": period,
        }
        resource_type, resource_id = "meter", gate.meter
    else:
        details = {
            "budget": budget.pk,
            "subject_type": budget.subject_type,
            "subject_id": budget.subject_id,
            "threshold_percent": percent,
            "spent": str(pricing.from_nano(used).quantize(Decimal("0.000001"))),
            "amount": str(budget.amount),
            "currency": budget.currency,
            "period": period,
        }
        resource_type, resource_id = "budget", budget.pk
    if refused:
        details["refused"] = True
    with context.tenant_context(tenant), transaction.atomic():
        audit.emit(
            actor=Actor.system("billing"),
            action="usage.alert",
            subject="usage.alert",
            resource_type=resource_type,
            resource_id=resource_id,
            details=details,
            data=details,
        )


def quota_forget(*, tenant: Any, meter: str = "gateway_messages") -> None:
    """Drop the month's quota counter (staff changed the usage by hand; tests): it is seeded
    again from the ledger at the next request that counts it."""
    _counters_forget([f"{QUOTA_PREFIX}:{tenant.public_id}:{meter}:{month_label(timezone.now())}"])


def _counters_forget(keys: Sequence[str]) -> None:
    if not keys:
        return
    client = ratelimit.redis_client()
    if client is None:
        for key in keys:
            ratelimit.memory_pop(key)
    else:
        client.delete(*keys)


# Reported usage events (CloudEvents 1.0) -----------------------------------------------------

ID_MAX = 256
TEXT_MAX = 256
MAX_AGE = timedelta(days=7)  # older events could escape de-duplication (its keys live 7 days)
MAX_SKEW = timedelta(minutes=5)
REQUIRED = ("specversion", "id", "source", "type")
KNOWN_ATTRIBUTES = {
    *REQUIRED,
    "time",
    "subject",
    "datacontenttype",
    "dataschema",
    "data",
}
EXTENSION_PATTERN = re.compile(r"^[a-z0-9]{1,20}$")
# An attribute's text: 1 to TEXT_MAX characters, no control character (C0, DEL, C1).
TEXT_PATTERN = rf"^[^\x00-\x1f\x7f-\x9f]{{1,{TEXT_MAX}}}$"
MAX_GROUP_VALUE = 128
LLM_TOKENS = "llm.tokens"
AGENT_ID_PATTERN = re.compile(
    r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
)


def _text(event: dict[str, Any], name: str, errors_: dict[str, list[str]]) -> str:
    value = event.get(name)
    if not isinstance(value, str) or not value or len(value) > TEXT_MAX:
        errors_.setdefault(name, []).append(f"A non-empty string of at most {TEXT_MAX} chars.")
        return ""
    if not re.fullmatch(TEXT_PATTERN, value):
        errors_.setdefault(name, []).append("No control characters.")
        return ""
    return value


def _printable(text: str) -> str:
    """A group value as reports show it: no control characters, no lone surrogates."""
    return "".join(c for c in text if c.isprintable())


def _path(data: Any, path: str) -> Any:
    for part in path.split(".") if path else []:
        if not isinstance(data, dict) or part not in data:
            return None
        data = data[part]
    return data


def _distinct_value(value: Any) -> str:
    """What a UNIQUE_COUNT meter counts: a printable string or a whole number, as text (so 7 and
    "7" are one value); "" when the event has no such value."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if isinstance(value, str) and len(value) <= MAX_GROUP_VALUE and value.isprintable():
        return value
    return ""


def _count_of(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 10**12:
        return None
    return value


def _event_counts(
    event: dict[str, Any],
    meters: list[Meter],
    org: str,
    now: datetime,
    reporter: dict[str, str] | None = None,
) -> tuple[list[Count], dict[str, list[Any]]]:
    """Validate one CloudEvent; its ledger counts (each with the event's de-duplication key).
    LLM tokens are attributed to `reporter` (the reporting key) and to the `agentid` extension's
    agent."""
    problems: dict[str, list[Any]] = {}
    if not isinstance(event, dict):
        return [], {"event": ["A CloudEvent is a JSON object."]}
    unknown = [
        name
        for name in event
        if name not in KNOWN_ATTRIBUTES and not EXTENSION_PATTERN.match(str(name))
    ]
    if unknown:
        problems["attributes"] = [
            f"{len(unknown)} attribute(s) are neither CloudEvents' nor extensions "
            "(1-20 of a-z, 0-9)."
        ]
    if event.get("specversion") != "1.0":
        problems["specversion"] = ["Must be “1.0”."]
    event_id = _text(event, "id", problems)
    source = _text(event, "source", problems)
    event_type = _text(event, "type", problems)
    for name in ("subject", "datacontenttype", "dataschema"):
        if name in event:
            _text(event, name, problems)
    at = now
    if "time" in event:
        try:
            if not isinstance(event["time"], str):
                raise ValueError
            at = datetime.fromisoformat(str(event["time"]).replace("Z", "+00:00"))
            if at.tzinfo is None:
                raise ValueError
        except ValueError:
            problems["time"] = ["An RFC 3339 timestamp with its offset."]
        else:
            # Well-formed, refused for when it is: 422 (core.errors.UNPROCESSABLE_CODES).
            if at > now + MAX_SKEW:
                problems["time"] = [ValidationError("In the future.", code="in_future")]
            elif at < now - MAX_AGE:
                problems["time"] = [
                    ValidationError(
                        "Older than 7 days: report usage within a week.", code="too_old"
                    )
                ]
    attribution = dict(reporter or {})
    if "agentid" in event:
        agent = event["agentid"]
        if not isinstance(agent, str) or not AGENT_ID_PATTERN.match(agent):
            problems["agentid"] = ["An agent's id (a UUID)."]
        else:
            attribution["agent"] = agent.lower()
    data = event.get("data")
    if problems:
        return [], problems
    dedup = ledger.event_key(org, source, event_id)
    counts = [Count("usage_events", 1, {"type": event_type[:MAX_GROUP_VALUE]}, at, "sum", dedup)]
    if event_type == LLM_TOKENS:
        if not isinstance(data, dict) or not isinstance(data.get("model"), str):
            # What `data` holds depends on `type`, which OpenAPI 3.0 cannot say: 422.
            message = "llm.tokens needs {model, input_tokens, output_tokens}."
            return [], {"data": [ValidationError(message, code="event_data")]}
        model = data["model"]
        if not model or len(model) > MAX_GROUP_VALUE or not model.isprintable():
            message = f"A model name of at most {MAX_GROUP_VALUE} chars."
            return [], {"data.model": [ValidationError(message, code="event_data")]}
        for direction in ("input", "output"):
            tokens = _count_of(data.get(f"{direction}_tokens", 0))
            if tokens is None:
                message = "A whole number from 0 to 10^12."
                return [], {
                    f"data.{direction}_tokens": [ValidationError(message, code="event_data")]
                }
            if tokens:
                groups = {"model": model, "direction": direction, **attribution}
                counts.append(Count("llm_tokens", tokens, groups, at, "sum", dedup))
    for meter in meters:
        if meter.event_type != event_type:
            continue
        member = ""
        if meter.aggregation == Aggregation.COUNT:
            amount: int | None = 1
        elif meter.aggregation == Aggregation.UNIQUE_COUNT:
            amount, member = 1, _distinct_value(_path(data, meter.value_path))
            if not member:
                return [], {
                    f"data.{meter.value_path}": [
                        f"Meter “{meter.slug}” counts distinct values here: a string of 1 to "
                        f"{MAX_GROUP_VALUE} printable characters or a whole number."
                    ]
                }
        else:
            amount = _count_of(_path(data, meter.value_path))
            if amount is None:
                # The organization's own meter asks for it: a conflict with its state (409).
                message = f"Meter “{meter.slug}” needs a whole number from 0 to 10^12 here."
                return [], {
                    f"data.{meter.value_path}": [ValidationError(message, code="meter_value")]
                }
        groups = {}
        for path in meter.group_by:
            value = _path(data, path)
            if value is not None:
                groups[path] = _printable(str(value)[:MAX_GROUP_VALUE])
        op = ledger.OPS.get(meter.aggregation, "sum")
        counts.append(Count(meter.slug, amount, groups, at, op, dedup, member))
    return counts, {}


@dataclass(frozen=True)
class Ingested:
    received: int
    counted: int  # new events
    duplicates: int
    admission: Admission


def usage_events_ingest(*, actor: Actor, events: list[Any], api_key: Any = None) -> Ingested:
    """Count reported usage events (CloudEvents 1.0), each (source, id) once.

    All or nothing: one invalid event refuses the whole batch (400, errors by index) and counts
    nothing; so does a batch that would pass a hard quota (`quota_exceeded`) or a budget
    (`budget_exceeded`). The batch is one request against the `usage_events` limit (and the
    reporting `api_key`'s own), and one Lua call. Each event is attributed to the reporting key
    and, with the extension attribute `agentid`, to that agent.
    """
    if not actor.can("usage:report"):
        raise PermissionDenied("Reporting usage needs the “usage:report” permission.")
    if not events:
        raise ValidationError({"events": ["Send at least one event."]})
    if len(events) > settings.BILLING_MAX_BATCH_EVENTS:
        raise ValidationError(
            {"events": [f"At most {settings.BILLING_MAX_BATCH_EVENTS} events per batch."]}
        )
    tenant = context.require_tenant()
    org = str(tenant.public_id)
    now = timezone.now()
    with context.public_context():
        meters = list(Meter.objects.filter(tenant_id=tenant.pk))
    counts: list[Count] = []
    problems: dict[str, list[Any]] = {}
    in_batch: set[str | None] = set()
    reporter = {"api_key": actor.id} if actor.kind == "api_key" else {}
    for index, event in enumerate(events):
        event_counts, event_problems = _event_counts(event, meters, org, now, reporter)
        for name, messages in event_problems.items():
            problems[name if len(events) == 1 else f"{index}.{name}"] = messages
        # A repeat inside the batch is a duplicate too (the script sees each key once per call).
        if event_counts and event_counts[0].dedup_key not in in_batch:
            in_batch.add(event_counts[0].dedup_key)
            counts += event_counts
    if problems:
        raise ValidationError(problems)
    windows = _windows(tenant, Resource.USAGE_EVENTS, api_key)
    quotas = limits.monthly_quotas(tenant)
    try:
        try:
            outcome = _ingest(tenant, now, windows, counts, quotas, alert_refusal=False)
        except (errors.UsageExhausted, errors.QuotaExceeded) as refusal:
            # Refused as if every event were new: a retried batch may hold events already
            # counted (its first answer was lost). Those count nothing, so leave them out and ask
            # again; a batch of duplicates only is answered as such.
            seen = _seen_before({count.dedup_key for count in counts if count.dedup_key})
            if not seen:
                _alert_refused(tenant, refusal)
                raise
            counts = [count for count in counts if count.dedup_key not in seen]
            outcome = _ingest(tenant, now, windows, counts, quotas)
    except ratelimit.Unreachable:
        # Fails closed: without Redis, duplicates could not be recognised. The runtime retries.
        raise errors.RateLimiterUnavailable from None
    fresh = outcome.new_dedup_keys
    return Ingested(
        received=len(events),
        counted=fresh,
        duplicates=len(events) - fresh,
        admission=Admission(usage=_tightest(outcome.usages)),
    )


def _ingest(
    tenant: Any,
    now: datetime,
    windows: list[ratelimit.Window],
    counts: list[Count],
    quotas: dict[str, limits.MonthlyQuota],
    *,
    alert_refusal: bool = True,
) -> ratelimit.Outcome:
    gates = _gates(tenant, counts, now, quotas=quotas)
    outcome = _consume(
        tenant,
        now,
        windows=windows,
        gates=gates,
        counts=counts,
        dedup_ttl_seconds=settings.BILLING_EVENT_DEDUP_SECONDS,
        alert_refusal=alert_refusal,
    )
    if gates and outcome.new_dedup_keys < len({c.dedup_key for c in counts}):
        # Events seen before moved the month's counters but not the ledger: start those
        # counters again from the ledger, which counted each event once.
        _counters_forget([gate.quota.key for gate in gates])
    return outcome


def _seen_before(keys: set[str | None]) -> set[str]:
    """Which reported events' de-duplication keys exist (one pipelined round trip; the refusal
    path only). In memory (development, no Redis) none are looked up."""
    client = ratelimit.redis_client()
    ordered = sorted(key for key in keys if key)
    if client is None or not ordered:
        return set()
    pipe = client.pipeline(transaction=False)
    for key in ordered:
        pipe.exists(key)
    return {key for key, found in zip(ordered, pipe.execute(), strict=True) if found}


# Custom meters -------------------------------------------------------------------------------

SLUG_PATTERN = re.compile(r"^[a-z][a-z0-9_]{1,39}$")
PATH_PATTERN = re.compile(r"^[A-Za-z0-9_]{1,40}(\.[A-Za-z0-9_]{1,40}){0,4}$")
EVENT_TYPE_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
MAX_METERS = 50
MAX_GROUP_BY = 5


def meter_create(
    *,
    actor: Actor,
    slug: str,
    name: str,
    event_type: str,
    aggregation: str,
    value_path: str = "",
    group_by: Sequence[str] = (),
    unit: str = "units",
) -> Meter:
    """An organization's own meter over its reported events (audited `meter.created`)."""
    from tenants.models import Tenant

    audit.require(actor, "usage:manage", action="meter.created", resource_type="meter")
    tenant = context.require_tenant()
    problems: dict[str, list[str]] = {}
    if not SLUG_PATTERN.match(slug or "") or slug in ledger.BUILTIN_METERS:
        problems["slug"] = ["2-40 of a-z, 0-9, _ starting with a letter; not a built-in meter."]
    name = (name or "").strip()
    if not name or len(name) > 80:
        problems["name"] = ["Give a name of at most 80 characters."]
    if not EVENT_TYPE_PATTERN.match(event_type or ""):
        problems["event_type"] = ["An event type like “com.example.images” (at most 128)."]
    if aggregation not in Aggregation.values:
        problems["aggregation"] = [f"One of {', '.join(Aggregation.values)}."]
    if aggregation != Aggregation.COUNT and not PATH_PATTERN.match(value_path or ""):
        # Required or not depending on `aggregation`, which OpenAPI 3.0 cannot say: 422.
        message = "A dotted path into the event's data, e.g. “images.count”."
        problems["value_path"] = [ValidationError(message, code="count_path")]
    if aggregation == Aggregation.COUNT and value_path:
        # Depends on `aggregation`, which OpenAPI 3.0 cannot say: 422.
        problems["value_path"] = [
            ValidationError("COUNT meters count events: leave value_path empty.", code="count_path")
        ]
    group_by = list(group_by)
    if len(group_by) > MAX_GROUP_BY or any(not PATH_PATTERN.match(p) for p in group_by):
        problems["group_by"] = [f"At most {MAX_GROUP_BY} dotted paths into the event's data."]
    unit = (unit or "").strip()
    if not unit or len(unit) > 32:
        problems["unit"] = ["A unit of at most 32 characters."]
    if problems:
        raise ValidationError(problems)
    try:
        with transaction.atomic():
            with context.public_context():
                # One meter creation per organization at a time, so the cap holds under races.
                Tenant.objects.select_for_update().only("pk").get(pk=tenant.pk)
                if Meter.objects.filter(tenant_id=tenant.pk).count() >= MAX_METERS:
                    raise errors.QuotaExceeded(
                        "meter_limit_reached", f"At most {MAX_METERS} meters.", limit="meters"
                    )
                meter = Meter.objects.create(
                    tenant=tenant,
                    slug=slug,
                    name=name,
                    event_type=event_type,
                    aggregation=aggregation,
                    value_path=value_path or "",
                    group_by=group_by,
                    unit=unit,
                )
            audit.record(
                actor=actor,
                action="meter.created",
                resource_type="meter",
                resource_id=slug,
                details={"event_type": event_type, "aggregation": aggregation},
            )
    except IntegrityError:
        raise errors.field_error("slug", "A meter with this slug exists.", "slug_taken") from None
    return meter


def rollup(*, actor: Actor, include_current: bool = False) -> ledger.RollupResult:
    """Move counted hours from Redis into PostgreSQL (the platform's job, idempotent)."""
    if actor.kind != "system":
        raise PermissionDenied("Only the platform rolls usage up.")
    with context.public_context():
        return ledger.rollup(include_current=include_current)


# Staff: price table, plan limits, temporary overrides --------------------------------------------


OVERRIDE_MAX_RATE = 10**9  # requests per window
OVERRIDE_MAX_QUOTA = 10**15  # a month (Lua compares counters exactly below 2^53)


def _limit_in_force(tenant: Any, resource: str, meter: str) -> str:
    """What an override replaces, for the audit record: the plan's (or a setting's) limit."""
    if meter:
        quota = limits.monthly_quotas(tenant).get(meter)
        return f"{quota.limit} a month" if quota is not None else "none"
    if resource in limits.plan_limits(tenant.plan_id):
        limit = limits.limit_for(tenant, resource)
        return f"{limit.limit}/{limit.window_seconds}s"
    return "the platform's settings"


def limit_override_create(
    *,
    actor: Actor,
    tenant: Any,
    limit: int,
    expires_at: datetime,
    reason: str,
    resource: str = "",
    meter: str = "",
    window_seconds: int = 60,
) -> Any:
    """A temporary limit for one organization (staff), with an expiry and a mandatory reason:
    of a rate-limited `resource` (`api`, `auth`, `tasks`, `publish`, `export`, `usage_events`:
    `limit` per `window_seconds`) or of the monthly quota on a `meter` (`limit` a month), one of
    the two. Recorded in the platform's log and the organization's; in force at the next request
    in every process (the limits' caches are dropped everywhere after commit), and no more once
    it expires. A later override of the same limit replaces an earlier one."""
    from billing.models import LimitOverride

    audit.require_staff(actor, "limit_override.created", "organization", str(tenant.public_id))
    resource, meter, window_seconds, reason = limit_override_check(
        tenant=tenant,
        resource=resource,
        meter=meter,
        limit=limit,
        window_seconds=window_seconds,
        expires_at=expires_at,
        reason=reason,
    )
    before = _limit_in_force(tenant, resource, meter)
    with transaction.atomic():
        with context.public_context():
            override = LimitOverride.objects.create(
                tenant_id=tenant.pk,
                resource=resource,
                meter=meter,
                limit=limit,
                window_seconds=window_seconds,
                expires_at=expires_at,
                reason=reason,
                created_by=actor.label[:254],
            )
        target = {"meter": meter} if meter else {"resource": resource}
        audit.record_in_both_logs(
            actor=actor,
            tenant=tenant,
            action="limit_override.created",
            resource_type="organization",
            resource_id=str(tenant.public_id),
            details={
                **target,
                "limit": limit,
                **({} if meter else {"window_seconds": window_seconds}),
                "replaces": before,
                "expires_at": expires_at.isoformat(),
                "reason": reason,
            },
        )
        limits.forget_on_commit()
    return override


def limit_override_check(
    *,
    tenant: Any,
    limit: Any,
    expires_at: datetime | None,
    reason: str,
    resource: str = "",
    meter: str = "",
    window_seconds: Any = 60,
) -> tuple[str, str, int, str]:
    """An override's fields checked (ValidationError naming each bad one), cleaned: (resource,
    meter, window seconds, reason)."""
    problems: dict[str, list[str]] = {}
    resource, meter = (resource or "").strip(), (meter or "").strip()
    if bool(resource) == bool(meter):
        problems["resource"] = ["Name a resource, or a meter for its monthly quota (one of them)."]
    elif resource and resource not in Resource.values:
        problems["resource"] = [f"One of: {', '.join(Resource.values)}."]
    elif meter:
        problem = _quota_meter_problem(tenant, meter)
        if problem:
            problems["meter"] = [problem]
    bound = OVERRIDE_MAX_QUOTA if meter else OVERRIDE_MAX_RATE
    if isinstance(limit, bool) or not isinstance(limit, int) or not 0 <= limit <= bound:
        problems["limit"] = [f"A whole number from 0 to {bound:,}."]
    if meter:
        window_seconds = 60  # not used by a monthly quota
    elif (
        isinstance(window_seconds, bool)
        or not isinstance(window_seconds, int)
        or not 1 <= window_seconds <= 86400
    ):
        problems["window_seconds"] = ["From 1 to 86,400 seconds."]
    if expires_at is None or expires_at <= timezone.now():
        problems["expires_at"] = ["The expiry must be in the future."]
    elif expires_at > timezone.now() + timedelta(days=90):
        problems["expires_at"] = ["At most 90 days ahead: overrides are temporary."]
    reason = (reason or "").strip()
    if not reason:
        problems["reason"] = ["Say why (it goes into both audit logs)."]
    elif len(reason) > 500:
        problems["reason"] = ["At most 500 characters."]
    if problems:
        raise ValidationError(problems)
    return resource, meter, window_seconds, reason


def _quota_meter_problem(tenant: Any, meter: str) -> str:
    """Why `meter` cannot have a monthly quota for `tenant` ("" when it can)."""
    builtin = ledger.BUILTIN_METERS.get(meter)
    if builtin is not None:
        aggregation = builtin.aggregation
    else:
        with context.public_context():
            own = Meter.objects.filter(tenant_id=tenant.pk, slug=meter).first()
        if own is None:
            return "Not a built-in meter nor one of this organization's."
        aggregation = own.aggregation
    if aggregation == Aggregation.MAX:
        return "A MAX meter has no monthly quota."
    return ""


def price_save(*, actor: Actor, price: Any, fields: Sequence[str]) -> Any:
    """Create or change a price (staff); recorded in the platform's log. Invoices already closed
    keep the prices they were issued with."""
    audit.require_staff(actor, "price.updated", "price", str(price))
    with context.public_context(), transaction.atomic():
        is_new = price.pk is None
        price.full_clean()
        price.save()
        audit.record(
            actor=actor,
            action="price.created" if is_new else "price.updated",
            resource_type="price",
            resource_id=f"{price.meter}:{price.model}",
            details={name: str(getattr(price, name)) for name in fields},
        )
    pricing.forget()
    return price


def plan_limit_save(*, actor: Actor, plan_limit: Any, fields: Sequence[str]) -> Any:
    """Create or change a plan's limit for a resource, or its monthly quota on a meter (a
    PlanQuota), staff only; in the platform's log."""
    audit.require_staff(actor, "plan_limit.updated", "plan", str(plan_limit.plan_id))
    with context.public_context(), transaction.atomic():
        is_new = plan_limit.pk is None
        plan_limit.full_clean()
        plan_limit.save()
        audit.record(
            actor=actor,
            action="plan_limit.created" if is_new else "plan_limit.updated",
            resource_type="plan",
            resource_id=str(plan_limit.plan_id),
            details={
                "resource": getattr(plan_limit, "resource", None) or plan_limit.meter,
                **{name: str(getattr(plan_limit, name)) for name in fields},
            },
        )
        limits.forget_on_commit()
    return plan_limit


# Spend budgets of API keys and agents -------------------------------------------------------

BUDGET_MAX = Decimal("1000000.00")  # in nano-units, far inside Lua's exact integers (2^53)


@dataclass(frozen=True)
class SubjectKind:
    """What a budget can be on. `check(actor, id)` returns the id as the ledger's groups hold
    it, or raises ObjectDoesNotExist when the organization has no such key or agent;
    `choices(actor)` lists the organization's (id, name) pairs."""

    check: Callable[[Actor, str], str]
    choices: Callable[[Actor], list[tuple[str, str]]]


# API keys are registered here; agents, a layer above billing, register theirs (agents.apps).
budget_subjects: dict[str, SubjectKind] = {}


def budget_subject_register(subject_type: str, kind: SubjectKind) -> None:
    budget_subjects[subject_type] = kind


def _api_key_subject(actor: Actor, subject_id: str) -> str:
    from credentials import selectors as credential_selectors
    from credentials.models import ApiKey

    if not subject_id.isdigit():
        raise ApiKey.DoesNotExist
    return str(credential_selectors.api_key_get(actor=actor, key_id=int(subject_id)).pk)


def _api_key_choices(actor: Actor) -> list[tuple[str, str]]:
    from credentials import selectors as credential_selectors

    return [
        (str(key.pk), key.name if key.status == "active" else f"{key.name} ({key.status})")
        for key in credential_selectors.api_key_list(actor=actor)
    ]


budget_subject_register(BudgetSubject.API_KEY, SubjectKind(_api_key_subject, _api_key_choices))


def _clean_amount(amount: Any, currency: str) -> Decimal:
    problems: dict[str, list[str]] = {}
    if not isinstance(amount, Decimal) or not amount.is_finite():
        problems["amount"] = ["A decimal amount, e.g. “25.00”."]
    elif not Decimal(0) <= amount <= BUDGET_MAX or amount != amount.quantize(Decimal("0.01")):
        problems["amount"] = [f"From 0.00 to {BUDGET_MAX:,} with at most 2 decimals."]
    if currency != pricing.CURRENCY:
        problems["currency"] = [f"Budgets are in the price table's currency, {pricing.CURRENCY}."]
    if problems:
        raise ValidationError(problems)
    return amount


def _budget_details(budget: Budget) -> dict[str, Any]:
    return {
        "subject_type": budget.subject_type,
        "subject_id": budget.subject_id,
        "amount": str(budget.amount),
        "currency": budget.currency,
    }


def budget_create(
    *,
    actor: Actor,
    subject_type: str,
    subject_id: str,
    amount: Decimal,
    currency: str = pricing.CURRENCY,
) -> Budget:
    """A monthly spend budget for one API key or agent of the organization (audited
    `budget.created`); in force at once in this process, within 30 s in every other."""
    audit.require(actor, BUDGETS_MANAGE, action="budget.created", resource_type="budget")
    tenant = context.require_tenant()
    kind = budget_subjects.get(subject_type)
    if kind is None:
        raise ValidationError({"subject_type": [f"One of: {', '.join(budget_subjects)}."]})
    subject_id = kind.check(actor, str(subject_id))  # 404 for another organization's key or agent
    amount = _clean_amount(amount, currency)
    try:
        with transaction.atomic():
            with context.public_context():
                budget = Budget.objects.create(
                    tenant_id=tenant.pk,
                    subject_type=subject_type,
                    subject_id=subject_id,
                    amount=amount,
                    currency=currency,
                    created_by=actor.label[:254],
                )
            audit.emit(
                actor=actor,
                action="budget.created",
                resource_type="budget",
                resource_id=budget.pk,
                details=_budget_details(budget),
            )
    except IntegrityError:
        raise ValidationError(
            {
                "subject_id": [
                    ValidationError(
                        "This key or agent has a budget already: change that one.", code="taken"
                    )
                ]
            }
        ) from None
    limits.forget_budgets(tenant.pk)
    return budget


def _budget_ref(budget_id: int) -> dict[str, Any]:
    return {"resource_type": "budget", "resource_id": budget_id}


def _budget_for_update(tenant: Any, budget_id: int) -> Budget:
    with context.public_context():
        return Budget.objects.select_for_update().get(pk=budget_id, tenant_id=tenant.pk)


def budget_update(*, actor: Actor, budget_id: int, amount: Decimal) -> Budget:
    """Change a budget's amount (audited `budget.updated`, with the amount before)."""
    audit.require(actor, BUDGETS_MANAGE, action="budget.updated", **_budget_ref(budget_id))
    tenant = context.require_tenant()
    with transaction.atomic():
        budget = _budget_for_update(tenant, budget_id)
        amount = _clean_amount(amount, budget.currency)
        before = str(budget.amount)
        budget.amount = amount
        with context.public_context():
            budget.save(update_fields=["amount", "updated_at"])
        audit.emit(
            actor=actor,
            action="budget.updated",
            resource_type="budget",
            resource_id=budget.pk,
            details={**_budget_details(budget), "amount_before": before},
        )
    limits.forget_budgets(tenant.pk)
    return budget


def budget_delete(*, actor: Actor, budget_id: int) -> None:
    """Remove a budget (audited `budget.deleted`): the key or agent is unbounded again."""
    audit.require(actor, BUDGETS_MANAGE, action="budget.deleted", **_budget_ref(budget_id))
    tenant = context.require_tenant()
    with transaction.atomic():
        budget = _budget_for_update(tenant, budget_id)
        details = _budget_details(budget)
        with context.public_context():
            budget.delete()
        audit.emit(
            actor=actor,
            action="budget.deleted",
            resource_type="budget",
            resource_id=budget_id,
            details=details,
        )
    limits.forget_budgets(tenant.pk)

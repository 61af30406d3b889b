"""Billing's writes: admitting a request (rate limits, quotas and metering in one Redis round trip),
ingesting reported usage events, custom meters, the rollup."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from audit import services as audit
from billing import ledger, limits
from billing.ledger import Count
from billing.models import Aggregation, Meter, Resource
from core import errors
from core.actors import Actor
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
        return errors.rate_limit_headers(
            usage.name, usage.limit, usage.window, usage.remaining, usage.reset
        )


def _window(org: str, limit: limits.Limit, key: str = "org") -> ratelimit.Window:
    return ratelimit.Window(
        key=f"{RATE_PREFIX}:{org}:{limit.resource}:{key}",
        limit=limit.limit,
        seconds=limit.window_seconds,
        name=limit.resource,
    )


def month_label(now: datetime) -> str:
    return now.astimezone(UTC).strftime("%Y%m")


def request_admit(*, resource: str, counts: Sequence[Count] = ()) -> Admission:
    """Count one request of the current organization against `resource` and meter `counts`.

    One Lua call. Over the limit: RateLimited (a 429 naming the resource). Redis unreachable: a
    fail-closed resource refuses (RateLimiterUnavailable, a 503); a fail-open one is let through
    with a warning and its `counts` added to PostgreSQL directly, so nothing is lost.
    """
    global fail_open_total
    tenant = context.require_tenant()
    org = str(tenant.public_id)
    limit = limits.limit_for(tenant, resource)
    now = timezone.now()
    charge_list, index_sets = ledger.charges(org, counts, now)
    try:
        outcome = ratelimit.consume(
            windows=[_window(org, limit)],
            charges=charge_list,
            index_sets=index_sets,
            hash_ttl_seconds=settings.BILLING_REDIS_TTL_SECONDS,
        )
    except ratelimit.Unreachable:
        if limit.fail_closed:
            logger.error("rate limiter unavailable for %s: refusing", resource)
            raise errors.RateLimiterUnavailable from None
        fail_open_total += 1
        logger.warning("rate limit %s not enforced: Redis is unreachable", resource)
        if counts:
            ledger.add_directly(tenant.pk, counts, now)
        return Admission(usage=None)
    return Admission(usage=outcome.usages[0])


def usage_add(*, tenant: Any, counts: Sequence[Count]) -> None:
    """Meter platform-measured usage that no limit gates (custom tool runs and their CPU time).

    The same ledger as every other count: one Redis call; Redis unreachable, the counts go to
    PostgreSQL directly, so nothing is lost.
    """
    now = timezone.now()
    charge_list, index_sets = ledger.charges(str(tenant.public_id), counts, now)
    try:
        ratelimit.consume(
            charges=charge_list,
            index_sets=index_sets,
            hash_ttl_seconds=settings.BILLING_REDIS_TTL_SECONDS,
        )
    except ratelimit.Unreachable:
        logger.warning("usage of %s written to PostgreSQL: Redis is unreachable", tenant.slug)
        ledger.add_directly(tenant.pk, counts, now)


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
    rate limits (per connection, per organization), the monthly message quota, the counters.

    Fails closed when Redis is unreachable (the channel layer that would deliver the message is
    Redis too). Raises RateLimited, QuotaExceeded (`message_quota_exceeded`) or
    RateLimiterUnavailable.
    """
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
    quota = ratelimit.Quota(
        key=f"{QUOTA_PREFIX}:{org}:gateway_messages:{month_label(now)}",
        limit=monthly_limit,
        amount=1,
        ttl_seconds=QUOTA_TTL_SECONDS,
        name="messages_per_month",
    )
    charge_list, index_sets = ledger.charges(org, counts, now)
    for _ in range(2):
        try:
            outcome = ratelimit.consume(
                windows=windows,
                quotas=[quota],
                charges=charge_list,
                index_sets=index_sets,
                hash_ttl_seconds=settings.BILLING_REDIS_TTL_SECONDS,
            )
        except ratelimit.Unreachable:
            logger.error("gateway counters unavailable: refusing the message")
            raise errors.RateLimiterUnavailable from None
        except ratelimit.QuotaPassed:
            raise errors.QuotaExceeded(
                "message_quota_exceeded",
                "The organization has used its plan's messages for this month.",
                limit="messages_per_month",
            ) from None
        if outcome.missing_quota is None:
            _alert_thresholds(
                tenant, "gateway_messages", quota.key, outcome.quota_values[0], 1, monthly_limit
            )
            return Admission(usage=outcome.usages[-1] if outcome.usages else None)
        _seed_quota(tenant, quota, "gateway_messages", now)
    raise errors.RateLimiterUnavailable  # the counter vanished twice in a row: Redis is flapping


def _seed_quota(tenant: Any, quota: ratelimit.Quota, meter: str, now: datetime) -> None:
    """Start a month's quota counter at what the ledger already holds for the month (zero on the
    first message of a month; the flushed total after Redis lost its data)."""
    from billing import selectors

    start = now.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    used = selectors.meter_total(tenant=tenant, meter=meter, start=start, end=now)
    client = ratelimit.redis_client()
    if client is None:
        ratelimit.memory_set(quota.key, used, quota.ttl_seconds, only_if_missing=True)
    else:
        try:
            client.set(quota.key, used, nx=True, ex=quota.ttl_seconds)
        except ratelimit.unreachable_errors():
            raise errors.RateLimiterUnavailable from None


ALERT_THRESHOLDS = (80, 100)


def _alert_thresholds(
    tenant: Any, meter: str, quota_key: str, used: int, amount: int, limit: int
) -> None:
    """Soft alerts: the request that takes a quota's counter across 80% or 100% announces it,
    once per threshold and month (a Redis key guards against a re-seeded counter crossing again):
    an audit event `usage.alert` and the same on the organization's `usage.alert` subject."""
    if limit <= 0:
        return
    for percent in ALERT_THRESHOLDS:
        threshold = -(-limit * percent // 100)
        if not used - amount < threshold <= used:
            continue
        key = f"{quota_key}:alert:{percent}"
        client = ratelimit.redis_client()
        if client is None:
            if ratelimit.memory_hash(key):
                continue
            ratelimit.memory_set(key, {"sent": 1}, QUOTA_TTL_SECONDS, only_if_missing=True)
        else:
            try:
                if not client.set(key, 1, nx=True, ex=QUOTA_TTL_SECONDS):
                    continue
            except ratelimit.unreachable_errors():
                logger.warning("usage alert %s %s%% not sent: Redis is unreachable", meter, percent)
                continue
        details = {
            "meter": meter,
            "threshold_percent": percent,
            "used": used,
            "quota": limit,
            "period": quota_key.rsplit(":", 1)[1],
        }
        with transaction.atomic():
            audit.emit(
                actor=Actor.system("billing"),
                action="usage.alert",
                subject="usage.alert",
                resource_type="meter",
                resource_id=meter,
                details=details,
                data=details,
            )


def quota_forget(*, tenant: Any, meter: str = "gateway_messages") -> None:
    """Drop the month's quota counter (staff changed the usage by hand; tests): it is seeded
    again from the ledger at the next message."""
    key = f"{QUOTA_PREFIX}:{tenant.public_id}:{meter}:{month_label(timezone.now())}"
    client = ratelimit.redis_client()
    if client is None:
        ratelimit.memory_pop(key)
    else:
        client.delete(key)


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


def _count_of(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 10**12:
        return None
    return value


def _event_counts(
    event: dict[str, Any], meters: list[Meter], org: str, now: datetime
) -> tuple[list[Count], dict[str, list[Any]]]:
    """Validate one CloudEvent; its ledger counts (each with the event's de-duplication key)."""
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
                groups = {"model": model, "direction": direction}
                counts.append(Count("llm_tokens", tokens, groups, at, "sum", dedup))
    for meter in meters:
        if meter.event_type != event_type:
            continue
        if meter.aggregation == Aggregation.COUNT:
            amount: int | None = 1
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
        op = "max" if meter.aggregation == Aggregation.MAX else "sum"
        counts.append(Count(meter.slug, amount, groups, at, op, dedup))
    return counts, {}


@dataclass(frozen=True)
class Ingested:
    received: int
    counted: int  # new events
    duplicates: int
    admission: Admission


def usage_events_ingest(*, actor: Actor, events: list[Any]) -> Ingested:
    """Count reported usage events (CloudEvents 1.0), each (source, id) once.

    All or nothing: one invalid event refuses the whole batch (400, errors by index) and counts
    nothing. The batch is one request against the `usage_events` limit, and one Lua call.
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
    for index, event in enumerate(events):
        event_counts, event_problems = _event_counts(event, meters, org, now)
        for name, messages in event_problems.items():
            problems[name if len(events) == 1 else f"{index}.{name}"] = messages
        # A repeat inside the batch is a duplicate too (the script sees each key once per call).
        if event_counts and event_counts[0].dedup_key not in in_batch:
            in_batch.add(event_counts[0].dedup_key)
            counts += event_counts
    if problems:
        raise ValidationError(problems)
    limit = limits.limit_for(tenant, Resource.USAGE_EVENTS)
    charge_list, index_sets = ledger.charges(org, counts, now)
    try:
        outcome = ratelimit.consume(
            windows=[_window(org, limit)],
            charges=charge_list,
            index_sets=index_sets,
            hash_ttl_seconds=settings.BILLING_REDIS_TTL_SECONDS,
            dedup_ttl_seconds=settings.BILLING_EVENT_DEDUP_SECONDS,
        )
    except ratelimit.Unreachable:
        # Fails closed: without Redis, duplicates could not be recognised. The runtime retries.
        raise errors.RateLimiterUnavailable from None
    fresh = outcome.new_dedup_keys
    return Ingested(
        received=len(events),
        counted=fresh,
        duplicates=len(events) - fresh,
        admission=Admission(usage=outcome.usages[0]),
    )


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


def limit_override_create(
    *,
    actor: Actor,
    tenant: Any,
    resource: str,
    limit: int,
    window_seconds: int,
    expires_at: datetime,
    reason: str,
) -> Any:
    """A temporary limit for one organization (staff), with an expiry and a mandatory reason;
    recorded in the platform's log and the organization's. Applies within limits.TTL_SECONDS in
    every process."""
    from billing.models import LimitOverride

    audit.require_staff(actor, "limit_override.created", "organization", str(tenant.public_id))
    problems: dict[str, list[str]] = {}
    if resource not in Resource.values:
        problems["resource"] = [f"One of: {', '.join(Resource.values)}."]
    if not isinstance(limit, int) or limit < 0:
        problems["limit"] = ["A whole number, 0 or more."]
    if not isinstance(window_seconds, int) or not 1 <= window_seconds <= 86400:
        problems["window_seconds"] = ["From 1 to 86,400 seconds."]
    if expires_at is None or expires_at <= timezone.now():
        problems["expires_at"] = ["The expiry must be in the future."]
    elif expires_at > timezone.now() + timedelta(days=90):
        problems["expires_at"] = ["At most 90 days ahead: overrides are temporary."]
    reason = (reason or "").strip()
    if not reason:
        problems["reason"] = ["Say why (it goes into both audit logs)."]
    if problems:
        raise ValidationError(problems)
    with transaction.atomic():
        with context.public_context():
            override = LimitOverride.objects.create(
                tenant_id=tenant.pk,
                resource=resource,
                limit=limit,
                window_seconds=window_seconds,
                expires_at=expires_at,
                reason=reason[:500],
                created_by=actor.label[:254],
            )
        audit.record_in_both_logs(
            actor=actor,
            tenant=tenant,
            action="limit_override.created",
            resource_type="organization",
            resource_id=str(tenant.public_id),
            details={
                "resource": resource,
                "limit": limit,
                "window_seconds": window_seconds,
                "expires_at": expires_at.isoformat(),
                "reason": reason[:500],
            },
        )
    limits.forget()
    return override


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
    return price


def plan_limit_save(*, actor: Actor, plan_limit: Any, fields: Sequence[str]) -> Any:
    """Create or change a plan's limit for a resource (staff); in the platform's log."""
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
                "resource": plan_limit.resource,
                **{name: str(getattr(plan_limit, name)) for name in fields},
            },
        )
    limits.forget()
    return plan_limit

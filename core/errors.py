"""The domain's errors: each carries a stable code, a message for people and an HTTP status, and
`describe` turns them (and Django's own) into the one shape that HTTP and WebSocket clients get."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from django.core.exceptions import ObjectDoesNotExist, PermissionDenied, ValidationError
from django.http import Http404

from core import metrics


def field_error(field: str, message: str, code: str) -> ValidationError:
    """A ValidationError on one field that keeps its code (a plain dict would drop it)."""
    return ValidationError({field: [ValidationError(message, code=code)]})


# A request whose every field error has one of these codes is well-formed (the OpenAPI document
# allows it: a 400 would contradict it) but refused for what it meets: 409 `conflict` when it
# conflicts with the organization's state (a name taken, above the plan's maximum, a reference to
# nothing), 422 `unprocessable` when its content cannot be processed in a way no schema states (a
# tool's code that does not compile, a usage event older than accepted).
CONFLICT_CODES = frozenset(
    {
        "name_taken",
        "unique",
        "taken",
        "slug_taken",
        "above_maximum",
        "unknown_secret",
        "permissions_not_allowed",
        "unknown_group",
        "meter_value",
        "plan_maximum",
        "revoked",
    }
)
# ... and 403 `permission_denied` when the caller may not ask for it (a scope their role lacks).
FORBIDDEN_CODES = frozenset({"not_held"})
UNPROCESSABLE_CODES = frozenset(
    {
        "syntax_error",
        "invalid_schema",
        "too_old",
        "in_future",
        "in_past",
        "invalid_range",
        "count_path",
        "event_data",
        # The autoscaler's policy: thresholds in pairs, down below up, max at least min.
        "pair",
        "not_below_up",
        "below_minimum",
        "no_metric",
    }
)


def _field_codes(error: ValidationError) -> set[str | None]:
    if not hasattr(error, "error_dict"):
        return {item.code for item in error.error_list}
    return {item.code for items in error.error_dict.values() for item in items}


class DomainError(Exception):
    """A refusal a client can act on. Subclasses fix the status; `code` is stable."""

    status: ClassVar[int] = 400

    def __init__(
        self,
        code: str,
        message: str,
        *,
        detail: dict[str, Any] | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.detail = detail
        self.retry_after = retry_after

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)} if self.retry_after else {}


class Unauthenticated(DomainError):
    """No credential, or a bad one (`token_invalid`, `api_key_revoked` ...): a 401."""

    status = 401


class Forbidden(DomainError):
    """The caller may not do this (`permission_denied`, `subject_reserved` ...): a 403."""

    status = 403


class IdempotencyKeyReused(DomainError):
    """An `Idempotency-Key` sent again with another request: a 422 (IETF idempotency draft)."""

    status = 422

    def __init__(self) -> None:
        super().__init__(
            "idempotency_key_reused",
            "This Idempotency-Key was already used with another request: use a new key.",
        )


class QuotaExceeded(DomainError):
    """A limit of the organization would be exceeded: a 409 naming the limit.

    `code` is one of `agent_limit_reached`, `instance_limit_reached`, `insufficient_cpu`,
    `insufficient_memory`, `instance_too_large`, `meter_limit_reached`; `limit` names the limit.
    (Monthly quotas on meters, gateway messages included, are UsageExhausted: a 429.)
    """

    status = 409

    def __init__(self, code: str, message: str, *, limit: str, **detail: Any) -> None:
        super().__init__(code, message, detail={"limit": limit, **detail})
        self.limit = limit


class RateLimited(DomainError):
    """Too many requests: retry after `retry_after` seconds (a 429 with rate-limit headers).

    The headers are the IETF draft's (draft-ietf-httpapi-ratelimit-headers): `RateLimit-Policy`
    names the policy with its quota `q` and window `w`, `RateLimit` its remaining `r` and the
    seconds `t` until it restarts.
    """

    status = 429

    def __init__(
        self,
        *,
        retry_after: int,
        limit: int,
        scope: str,
        message: str = "Too many requests: slow down.",
        window: int | None = None,
    ) -> None:
        super().__init__("rate_limited", message, retry_after=max(retry_after, 1))
        self.limit = limit
        self.scope = scope
        self.window = window
        metrics.RATE_LIMIT_REFUSALS.labels(scope[:64]).inc()

    @property
    def headers(self) -> dict[str, str]:
        return {
            "Retry-After": str(self.retry_after),
            **rate_limit_headers(
                self.scope, self.limit, self.window or self.retry_after, 0, self.retry_after
            ),
        }


def rate_limit_headers(
    policy: str, limit: int, window: int, remaining: int, reset: int
) -> dict[str, str]:
    """`RateLimit-Policy` and `RateLimit` for one policy (the IETF draft's structured fields)."""
    name = policy.replace("\\", "").replace('"', "")
    return {
        "RateLimit-Policy": f'"{name}";q={limit};w={window}',
        "RateLimit": f'"{name}";r={remaining};t={reset}',
    }


class UsageExhausted(DomainError):
    """A monthly quota of the plan (`quota_exceeded`) or a spend budget (`budget_exceeded`) is
    used up: a 429 whose `detail` names it; `Retry-After` is the time until the month restarts."""

    status = 429

    def __init__(self, code: str, message: str, *, retry_after: int, **detail: Any) -> None:
        super().__init__(code, message, detail=detail, retry_after=retry_after)


class ConcurrencyLimited(DomainError):
    """Too many runs of the organization at once (`concurrency_limit`): a 429; retry shortly."""

    status = 429

    def __init__(self, *, limit: int, retry_after: int = 1) -> None:
        super().__init__(
            "concurrency_limit",
            f"Your organization already has {limit} tool runs in progress: retry shortly.",
            detail={"limit": limit},
            retry_after=retry_after,
        )
        self.limit = limit


class Unavailable(DomainError):
    """Something the request needs cannot be reached right now: a 503 with `Retry-After`."""

    status = 503


class RateLimiterUnavailable(Unavailable):
    """The rate limiter's counters cannot be reached and the limit fails closed."""

    RETRY_AFTER = 30

    def __init__(self) -> None:
        super().__init__(
            "rate_limiter_unavailable",
            "This is unavailable right now: try again shortly.",
            retry_after=self.RETRY_AFTER,
        )


class DependencyUnavailable(Unavailable):
    """PostgreSQL or Redis cannot be reached (a restart, a failover): a 503 the client retries.
    Made from the driver's error by `outage`."""

    RETRY_AFTER = 5


def outage(error: BaseException) -> DependencyUnavailable | None:
    """The 503 for an error that means a database or Redis outage, None for anything else.

    PostgreSQL: Django's OperationalError and InterfaceError (a dropped or closed connection, a
    server shutting down, a failover; also deadlocks and cancelled statements, which are worth a
    retry too). Redis: redis-py's connection and timeout errors (the cache, the channel layer).
    """
    from django.db.utils import InterfaceError, OperationalError
    from redis import exceptions as redis_errors

    if isinstance(error, DependencyUnavailable):
        return error
    if isinstance(error, OperationalError | InterfaceError):
        return DependencyUnavailable(
            "database_unavailable",
            "The database is unavailable right now: try again shortly.",
            retry_after=DependencyUnavailable.RETRY_AFTER,
        )
    if isinstance(error, redis_errors.ConnectionError | redis_errors.TimeoutError):
        return DependencyUnavailable(
            "cache_unavailable",
            "A backing service is unavailable right now: try again shortly.",
            retry_after=DependencyUnavailable.RETRY_AFTER,
        )
    return None


@dataclass(frozen=True)
class Problem:
    """An error as a client sees it: `{"error": {"code", "message", "detail"}}` plus a status."""

    status: int
    code: str
    message: str
    detail: Any = None
    headers: dict[str, str] = field(default_factory=dict)


def describe(error: Exception) -> Problem | None:
    """The client-facing form of a domain or Django error; None for anything unexpected."""
    if isinstance(error, DomainError):
        return Problem(error.status, error.code, error.message, error.detail, error.headers)
    if isinstance(error, ValidationError):
        codes = _field_codes(error)
        detail = error.message_dict if hasattr(error, "error_dict") else error.messages
        message = "; ".join(error.messages)[:500]
        if codes and codes <= FORBIDDEN_CODES | CONFLICT_CODES | UNPROCESSABLE_CODES:
            if codes & FORBIDDEN_CODES:
                return Problem(403, "permission_denied", message, detail)
            if codes <= CONFLICT_CODES:
                return Problem(409, "conflict", message, detail)
            return Problem(422, "unprocessable", message, detail)
        code = "invalid_transition" if "invalid_transition" in codes else "invalid"
        return Problem(400, code, message, detail)
    if isinstance(error, PermissionDenied):
        return Problem(403, "permission_denied", str(error) or "Not allowed.")
    if isinstance(error, ObjectDoesNotExist | Http404):
        return Problem(404, "not_found", "Not found.")
    unavailable = outage(error)
    if unavailable is not None:
        return describe(unavailable)
    return None

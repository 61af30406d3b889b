"""Rate limits whose keys always carry the organization, with a policy for when Redis is down.

django-ratelimit counts in the shared cache (Redis). When the cache cannot be reached, a
fail-closed limit refuses the request (sign-in, key creation: better a refusal than an unmetered
brute force) and a fail-open one lets it through with a log line.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from django_ratelimit.core import get_usage

from core.errors import RateLimited, RateLimiterUnavailable
from tenants import context

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Usage:
    limit: int
    remaining: int
    reset: int


def hit(*, scope: str, key: str, rate: str, fail_closed: bool) -> Usage | None:
    """Count one request against `rate` for `key` within the current organization.

    Raises RateLimited when over the limit, RateLimiterUnavailable when the counters cannot be
    reached and `fail_closed`; returns the usage (None when failing open).
    """
    tenant = context.current_tenant()
    namespace = str(tenant.public_id) if tenant is not None else "platform"
    value = f"{namespace}:{key}"
    try:
        usage = get_usage(
            None,
            group=f"agentplane.{scope}",
            key=lambda group, request: value,
            rate=rate,
            increment=True,
        )
    except Exception:
        usage = {"count": 0, "limit": 0, "should_limit": True, "time_left": -1}
        logger.error("rate limiter unavailable for %s", scope, exc_info=True)
    if usage is None:
        return None
    if usage["time_left"] == -1:  # the cache failed (django-ratelimit's marker)
        if fail_closed:
            raise RateLimiterUnavailable
        logger.warning("rate limit %s not enforced: the cache is unavailable", scope)
        return None
    if usage["should_limit"]:
        raise RateLimited(retry_after=usage["time_left"], limit=usage["limit"], scope=scope)
    return Usage(
        limit=usage["limit"],
        remaining=max(usage["limit"] - usage["count"], 0),
        reset=max(usage["time_left"], 0),
    )

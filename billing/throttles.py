"""The API's rate limit and metering: one DRF throttle for every API view (settings'
DEFAULT_THROTTLE_CLASSES), one Lua call per request (billing.services.request_admit).

A view names the resource it counts against with `rate_limit_resource` (default `api`); sign-in
sets `throttle_classes = ()` (it has its own limits, per address and per account). A GET of the
`api` resource reads its verdict after the view has run (core.after_read), unless the view sets
`reads_usage` (its answer includes the usage this very request adds).
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from rest_framework.throttling import BaseThrottle

from billing import ledger, services
from billing.ledger import Count
from billing.models import Resource
from core import after_read
from tenants import context

# A request's counts per API key (None: no key) and their signature, built once: request_admit
# only reads them.
_counts: dict[Any, tuple[list[Count], tuple[Any, ...]]] = {}


def _counts_of(key_id: Any) -> tuple[list[Count], tuple[Any, ...]]:
    groups = {"api_key": str(key_id)} if key_id is not None else None
    if len(_counts) >= 4096:
        _counts.clear()
    counts = [Count("api_requests", 1, groups)]
    entry = _counts[key_id] = (counts, ledger.counts_signature(counts))
    return entry


class PlanThrottle(BaseThrottle):
    def allow_request(self, request: Any, view: Any) -> bool:
        resource = getattr(view, "rate_limit_resource", Resource.API)
        if resource is None or context.current_tenant() is None:
            return True
        if not settings.BILLING_METERING:
            return True  # benchmarks' floor only: no limit, no metering
        credential = getattr(request, "auth", None)
        api_key = getattr(credential, "api_key", None)
        key_id = api_key.pk if api_key is not None else None
        entry = _counts.get(key_id)
        counts, signature = entry if entry is not None else _counts_of(key_id)
        if (
            resource == Resource.API
            and not getattr(view, "reads_usage", False)
            and after_read.settles_after_read(view, request)
        ):
            # A read of the `api` resource (it fails open): the view's database work overlaps
            # the round trip, and the verdict is read when the view returns (a refusal drops
            # its response). Counted the same: the call is sent before the view runs. A view
            # that reads the counters this request moves (`reads_usage`) waits for them.
            pending = services.request_admit_send(
                resource=resource, counts=counts, api_key=api_key, signature=signature
            )
            after_read.defer(request, lambda: _answer(request, pending.finish()))
            return True
        _answer(request, services.request_admit(resource=resource, counts=counts, api_key=api_key))
        return True


def _answer(request: Any, admission: services.Admission) -> None:
    # Read by billing.middleware.rate_limit_headers on the way out.
    request._request.rate_limit_headers = admission.headers

"""What operators and load balancers call, on every host, before anything else runs:
`/healthz` (the process answers), `/readyz` (PostgreSQL and Redis answer), `/metrics`
(Prometheus, staff or internal addresses only); plus a request id on every request and log line,
request metrics per route and status, and a bad `Host` logged as one warning line."""

from __future__ import annotations

import ipaddress
import logging
import re
import time
import uuid
from collections.abc import Callable

import structlog
from django.conf import settings
from django.core.cache import cache
from django.core.exceptions import DisallowedHost
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse

from core import metrics

logger = logging.getLogger("agentplane.requests")
REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
HEALTH_PATHS = frozenset({"/healthz", "/readyz"})


def _error(status: int, code: str, message: str, **headers: str) -> JsonResponse:
    response = JsonResponse(
        {"error": {"code": code, "message": message, "detail": None}}, status=status
    )
    for name, value in headers.items():
        response[name.replace("_", "-")] = value
    return response


def healthz(request: HttpRequest) -> HttpResponse:
    return JsonResponse({"status": "ok"})


def _check_database() -> str | None:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as error:  # any failure means not ready; the reason is logged
        logger.warning("readyz: database unavailable: %s", type(error).__name__)
        connection.close()
        return "unavailable"
    return None


def _check_redis() -> str | None:
    if not settings.REDIS_URL:
        return None  # in-memory cache and channel layer: nothing to reach
    try:
        cache.get("agentplane.readyz")
    except Exception as error:
        logger.warning("readyz: redis unavailable: %s", type(error).__name__)
        return "unavailable"
    return None


def readyz(request: HttpRequest) -> HttpResponse:
    checks = {"database": _check_database() or "ok", "redis": _check_redis() or "ok"}
    ready = all(value == "ok" for value in checks.values())
    response = JsonResponse({"status": "ready" if ready else "unavailable", "checks": checks})
    if not ready:
        response.status_code = 503
        response["Retry-After"] = "5"
    return response


def _internal(address: str | None) -> bool:
    try:
        ip = ipaddress.ip_address(address or "")
    except ValueError:
        return False
    return any(ip in ipaddress.ip_network(net) for net in settings.METRICS_ALLOWED_NETWORKS)


def metrics_view(request: HttpRequest) -> HttpResponse:
    """Prometheus text format, for an internal address or a signed-in staff member (public
    host); anyone else gets the same 404 as for an unknown path."""
    user = getattr(request, "user", None)
    on_public_host = getattr(request, "tenant", None) is None  # staff are users of `public`
    is_staff = bool(on_public_host and user is not None and user.is_authenticated and user.is_staff)
    if not (_internal(request.META.get("REMOTE_ADDR")) or is_staff):
        return _error(404, "not_found", "Not found.")
    body, content_type = metrics.exposition()
    return HttpResponse(body, content_type=content_type)


class OperationsMiddleware:
    """First in the chain: health answers without a host or a database; then the request id,
    the host check, and the request's metrics."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path in HEALTH_PATHS:
            return healthz(request) if request.path == "/healthz" else readyz(request)
        given = request.META.get("HTTP_X_REQUEST_ID", "")
        request_id = given if REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
        request.request_id = request_id
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=request_id)
        started = time.perf_counter()
        try:
            request.get_host()
        except DisallowedHost:
            logger.warning(
                "refused host %r from %s",
                request.META.get("HTTP_HOST", "")[:100],
                request.META.get("REMOTE_ADDR"),
            )
            response: HttpResponse = _error(400, "bad_host", "Unknown host.")
            response._has_been_logged = True  # type: ignore[attr-defined]  # the line above
        else:
            response = self.get_response(request)
        match = getattr(request, "resolver_match", None)
        route = (match.route or match.view_name) if match is not None else "unmatched"
        route = route[:100] if route else "unmatched"
        status = str(response.status_code)
        metrics.HTTP_REQUESTS.labels(route, request.method, status).inc()
        metrics.HTTP_LATENCY.labels(route, request.method).observe(time.perf_counter() - started)
        if response.status_code >= 500:
            metrics.HTTP_ERRORS.labels(route, status).inc()
        response["X-Request-ID"] = request_id
        return response

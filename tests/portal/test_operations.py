"""Operator endpoints on every host (/healthz, /readyz, /metrics), the request id, JSON log lines
with the organization, and a bad Host as one warning line."""

from __future__ import annotations

import json
import logging
import logging.config

import pytest
from django.test import Client

from tests.credentials.helpers import bearer, token_pair

HOSTS = ["localhost", "acme.localhost", "nobody.localhost", "10.1.2.3", "evil.example"]


@pytest.mark.parametrize("host", HOSTS)
def test_health_and_readiness_answer_on_every_host(db, host):
    client = Client(HTTP_HOST=host)
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "checks": {"database": "ok", "redis": "ok"}}


def test_readiness_is_503_when_redis_is_down(db, settings):
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": "redis://127.0.0.1:1/0",
            "OPTIONS": {"socket_connect_timeout": 0.2, "socket_timeout": 0.2},
        }
    }
    response = Client().get("/readyz", HTTP_HOST="localhost")
    assert response.status_code == 503
    assert response["Retry-After"] == "5"
    assert response.json()["checks"] == {"database": "ok", "redis": "unavailable"}


def test_metrics_for_internal_addresses_and_staff_only(org, client_for, staff_user):
    client_for(org).get("/api/v1/agents/", **bearer(token_pair(org, org.owner).access))
    inside = Client(HTTP_HOST="localhost").get("/metrics")
    assert inside.status_code == 200
    assert inside["Content-Type"].startswith("text/plain")
    text = inside.content.decode()
    for name in (
        "agentplane_http_requests_total",
        "agentplane_http_request_duration_seconds_bucket",
        "agentplane_websocket_connections",
        "agentplane_rate_limit_refusals_total",
        "agentplane_channel_layer_send_seconds",
    ):
        assert name in text
    assert 'route="api/v1/agents/",status="200"' in text
    outside = Client(HTTP_HOST="localhost", REMOTE_ADDR="203.0.113.9")
    assert outside.get("/metrics").status_code == 404
    on_org_host = Client(HTTP_HOST=org.host, REMOTE_ADDR="203.0.113.9")
    assert on_org_host.get("/metrics").status_code == 404
    from tenants import context

    with context.public_context():
        outside.force_login(staff_user)
    assert outside.get("/metrics").status_code == 200


def test_every_response_carries_a_request_id(org, client_for):
    response = client_for(org).get("/api/v1/agents/")
    assert len(response["X-Request-ID"]) == 32
    given = client_for(org).get("/api/v1/agents/", HTTP_X_REQUEST_ID="lb-1234")
    assert given["X-Request-ID"] == "lb-1234"
    forged = client_for(org).get("/api/v1/agents/", HTTP_X_REQUEST_ID="a\nb")
    assert forged["X-Request-ID"] != "a\nb"


def test_a_bad_host_is_one_warning_line(db, caplog):
    caplog.set_level(logging.INFO)
    response = Client(HTTP_HOST="evil.example").get("/api/v1/agents/")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "bad_host"
    lines = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(lines) == 1
    assert lines[0].levelname == "WARNING" and lines[0].exc_info is None
    assert "evil.example" in lines[0].getMessage()


def test_log_lines_are_json_with_the_request_id_and_organization(org, client_for):
    from django.conf import settings

    from core.logs import json_formatter
    from tenants.logging import OrganizationFilter

    formatter = logging.config.dictConfigClass({}).configure_custom(dict(json_formatter()))
    records: list[str] = []

    class Capture(logging.Handler):
        def emit(self, record):
            records.append(formatter.format(record))

    handler = Capture()
    handler.addFilter(OrganizationFilter())
    logger = logging.getLogger("django.request")
    logger.addHandler(handler)
    try:
        response = client_for(org).get("/api/v1/agents/", HTTP_AUTHORIZATION="Bearer not-a-token")
    finally:
        logger.removeHandler(handler)
    assert response.status_code == 401
    line = json.loads(records[-1])
    assert line["level"] == "warning"
    assert line["request_id"] == response["X-Request-ID"]
    assert line["organization"] == str(org.tenant.public_id)
    assert "not-a-token" not in records[-1]
    assert settings.LOG_FORMAT == "json"


def _sample(text: str, name: str, labels: str) -> float:
    """The value of one sample line (`name{labels} value`) of an exposition, 0 if absent."""
    for line in text.splitlines():
        if line.startswith(f"{name}{{{labels}}} "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_metrics_hold_the_audit_write_time_after_a_recorded_event(org, client_for):
    def scrape() -> str:
        response = Client(HTTP_HOST="localhost").get("/metrics")
        assert response.status_code == 200
        return response.content.decode()

    before = scrape()
    response = client_for(org).post(
        "/api/v1/api-keys/",
        {"name": "metrics", "scopes": ["org:read"]},
        content_type="application/json",
        **bearer(token_pair(org, org.owner).access),
    )
    assert response.status_code == 201  # api_key.created recorded (and sealed: immediate)
    after = scrape()
    name = "agentplane_audit_write_seconds_count"
    assert _sample(after, name, 'step="record"') >= _sample(before, name, 'step="record"') + 1
    assert _sample(after, name, 'step="seal"') >= _sample(before, name, 'step="seal"') + 1
    assert 'agentplane_audit_write_seconds_bucket{le="0.005",step="record"}' in after
    assert _sample(after, "agentplane_background_job_lag_seconds", 'job="audit_sealer"') >= 0
    assert 'agentplane_background_job_lag_seconds{job="audit_sealer"}' in after
    for listed in (
        "agentplane_websocket_frames_total",
        "agentplane_http_server_errors_total",
        "agentplane_audit_failure_record_seconds",
        "agentplane_background_job_lag_seconds",
    ):
        assert f"# TYPE {listed.removesuffix('_total')}" in after

"""Schemathesis against the live app: no 5xx, every response as the OpenAPI document says."""

from __future__ import annotations

import base64
import json
import secrets
import subprocess
import sys
import urllib.request
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from billing import services as billing_services
from billing.models import Resource
from core.actors import Actor
from credentials import keyring, services
from tenants import context
from tests.credentials.helpers import api_key, token_pair
from tests.live import free_port, gunicorn

# A free port of this range: a fixed one collided with another run of the suite on the machine.
PORTS = range(8201, 8261)
# Every check (schemathesis' default: all 14; no `--checks` here, which would override the per-
# operation settings of the config) and every phase, the stateful one (links inferred from the
# document) included; the few settings that differ from the defaults are in schemathesis.toml
# beside this file, each with its reason.
CONFIG = Path(__file__).with_name("schemathesis.toml")
# About a minute of fuzzing on a shared 2-core machine (`--max-time` bounds the whole run).
MAX_SECONDS = "60"


def _get(url: str, host: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers={"Host": host, **(headers or {})})  # noqa: S310
    try:
        # The first request of a server process builds the OpenAPI document (seconds when loaded).
        with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def test_schemathesis_finds_no_5xx_and_no_nonconforming_response(
    scratch_org, django_db_blocker, tmp_path: Path
):
    keyring.forget()
    with django_db_blocker.unblock():
        access = token_pair(scratch_org, scratch_org.admin).access
        key, raw_key = api_key(scratch_org, ["org:read"], user=scratch_org.admin)
        # The plan's limits (600 API calls a minute) would answer most of the run with 429s,
        # leaving the operations behind them untested: staff lift them for this organization.
        for resource in Resource.values:
            billing_services.limit_override_create(
                actor=Actor.system("tests"),
                tenant=scratch_org.tenant,
                resource=resource,
                limit=10**6,
                window_seconds=60,
                expires_at=timezone.now() + timedelta(hours=1),
                reason="schemathesis conformance run",
            )
    host = scratch_org.host
    env = {
        "API_TOKEN_RATE_PER_IP": "100000/m",
        "API_TOKEN_RATE_PER_ACCOUNT": "100000/m",
        "API_KEY_CREATE_RATE": "100000/h",
        # The fuzzer's bad credentials (the ignored_auth check) would trip the failed-credentials
        # throttle, and the revocation check below would get a 429 instead of its 401.
        "AUTH_FAILURE_RATE_PER_IP": "100000/m",
        "AUTH_FAILURE_RATE_PER_ORGANIZATION": "100000/m",
        # Secrets and knowledge need a master key; DEBUG=0 servers do not generate one.
        "AGENTPLANE_MASTER_KEY": base64.b64encode(secrets.token_bytes(32)).decode(),
        # One sandbox worker per server process is plenty for the fuzzer (custom tools).
        "TOOLS_WORKERS": "1",
    }
    with gunicorn(free_port(PORTS), extra_env=env) as base_url:
        status, schema = _get(f"{base_url}/api/schema/", host)
        assert status == 200
        (tmp_path / "schema.yaml").write_bytes(schema)
        # Both schemes over the wire before the fuzzing.
        for header in (f"Bearer {access}", f"Api-Key {raw_key}"):
            assert (
                _get(f"{base_url}/api/v1/organization/", host, {"Authorization": header})[0] == 200
            )

        result = subprocess.run(  # noqa: S603
            [
                str(Path(sys.executable).with_name("st")),
                "--config-file",
                str(CONFIG),
                "run",
                str(tmp_path / "schema.yaml"),
                "--url",
                base_url,
                "-H",
                f"Host: {host}",
                "-H",
                f"Authorization: Bearer {access}",
                "--phases",
                "examples,coverage,fuzzing,stateful",
                "--max-examples",
                "10",
                "--max-time",
                MAX_SECONDS,
                "--seed",
                "20261127",
                # One worker thread: CPython 3.11's AST constructor keeps its recursion depth in
                # state the threads share, and schemathesis compiling in two threads at once
                # crashed a run with "AST constructor recursion depth mismatch" (python/cpython
                # gh-106905; nothing reached the server).
                "--workers",
                "1",
                # Also the response-time check's limit: generous, the machine is shared.
                "--request-timeout",
                "30",
                "--no-shrink",
                "--suppress-health-check",
                "all",
                "--warnings",
                "off",
            ],
            capture_output=True,
            text=True,
            # The run stops itself after MAX_SECONDS; this only catches a hang.
            timeout=400,
            cwd=tmp_path,
        )
        # Revoked here (another process), refused there at the very next request: keys are
        # not cached by the server's workers.
        with django_db_blocker.unblock(), context.tenant_context(scratch_org.tenant):
            services.api_key_revoke(actor=Actor.system("tests"), key_id=key.pk)
        for _ in range(4):  # both workers
            status, body = _get(
                f"{base_url}/api/v1/organization/", host, {"Authorization": f"Api-Key {raw_key}"}
            )
            assert (status, json.loads(body)["error"]["code"]) == (401, "api_key_revoked")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    assert "No issues found" in output or "passed" in output, output[-3000:]


pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")

"""An API key's own rate limits beside its organization's: set at creation or later by an admin
(audited), enforced exactly across processes, refused with the `<resource>.key` policy named."""

from __future__ import annotations

import json
import multiprocessing

import pytest

from audit.models import AuditEvent
from billing import limits, services
from billing.ledger import Count
from credentials.models import ApiKey
from tenants import context
from tests.credentials.helpers import api_key_header, error_code
from tests.credentials.test_api import _credentials

KEYS = "/api/v1/api-keys/"


@pytest.fixture(autouse=True)
def _fresh():
    limits.forget()
    yield
    limits.forget()


def create_key(client, rate_limits=None, **extra):
    body = {"name": "runtime", "scopes": ["agents:read", "usage:read"]}
    if rate_limits is not None:
        body["rate_limits"] = rate_limits
    return client.post(KEYS, data=json.dumps(body), content_type="application/json", **extra)


def test_a_key_created_with_its_own_limit_is_refused_past_it_naming_the_policy(org, client_for):
    created = create_key(client_for(org, org.admin), {"api": {"limit": 5, "window_seconds": 60}})
    assert created.status_code == 201, created.content
    assert created.json()["rate_limits"] == {"api": {"limit": 5, "window_seconds": 60}}
    raw = created.json()["key"]
    client = client_for(org)

    served = [client.get("/api/v1/agents/", **api_key_header(raw)) for _ in range(5)]
    refused = client.get("/api/v1/agents/", **api_key_header(raw))
    person = client_for(org, org.admin).get("/api/v1/agents/")

    assert [r.status_code for r in served] == [200] * 5
    # The headers name the tighter policy: the key's 5, not the organization's 600.
    assert served[0]["RateLimit-Policy"] == '"api.key";q=5;w=60'
    assert served[-1]["RateLimit"].startswith('"api.key";r=0;t=')
    assert refused.status_code == 429 and error_code(refused) == "rate_limited"
    assert refused["RateLimit-Policy"] == '"api.key";q=5;w=60'
    assert 1 <= int(refused["Retry-After"]) <= 60
    assert person.status_code == 200 and person["RateLimit-Policy"] == '"api";q=600;w=60'


def _hammer(key_pk: int, rate_limits: dict, attempts: int, queue) -> None:
    key = ApiKey(pk=key_pk, rate_limits=rate_limits)
    allowed = 0
    for _ in range(attempts):
        try:
            services.request_admit(
                resource="api",
                counts=[Count("api_requests", 1, {"api_key": str(key_pk)})],
                api_key=key,
            )
            allowed += 1
        except services.errors.RateLimited as error:
            assert error.scope == "api.key"
    queue.put(allowed)


def test_a_keys_limit_is_exact_from_4_processes(org):
    """200 requests from 4 processes against a key's limit of 30: exactly 30 served."""
    rate_limits = {"api": {"limit": 30, "window_seconds": 60}}
    with context.tenant_context(org.tenant):
        limits.limit_for(org.tenant, "api")  # warm the caches the forked processes read
        services.request_admit(resource="tasks")
        processes = multiprocessing.get_context("fork")
        queue = processes.Queue()
        workers = [
            processes.Process(target=_hammer, args=(9_000_001, rate_limits, 50, queue))
            for _ in range(4)
        ]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(60)
    allowed = [queue.get(timeout=5) for _ in workers]

    assert sum(allowed) == 30
    assert all(worker.exitcode == 0 for worker in workers)


@pytest.mark.parametrize(
    ("principal", "status"),
    [
        ("anonymous", 401),
        ("viewer", 403),
        ("member", 403),
        ("admin", 200),
        ("owner", 200),
        ("other org's admin", 401),
    ],
)
def test_changing_a_keys_limits_by_role(org, other_org, client_for, principal, status):
    raw_key = create_key(client_for(org, org.admin)).json()
    limits_body = {"rate_limits": {"tasks": {"limit": 2}}}

    response = client_for(org).patch(
        f"{KEYS}{raw_key['id']}/",
        data=json.dumps(limits_body),
        content_type="application/json",
        **_credentials(org, other_org, principal),
    )

    assert response.status_code == status
    with context.tenant_context(org.tenant):
        stored = ApiKey.objects.get(pk=raw_key["id"]).rate_limits
        changes = list(AuditEvent.objects.filter(action="api_key.limits_changed"))
    if status != 200:
        assert stored == {} and changes == []
        return
    assert response.json()["rate_limits"] == {"tasks": {"limit": 2, "window_seconds": 60}}
    assert stored == {"tasks": {"limit": 2, "window_seconds": 60}}
    (change,) = changes
    assert change.details["before"] == {} and change.details["after"] == stored


def test_another_organizations_key_is_404(org, other_org, client_for):
    theirs = create_key(client_for(other_org, other_org.admin)).json()

    response = client_for(org, org.admin).patch(
        f"{KEYS}{theirs['id']}/",
        data=json.dumps({"rate_limits": {"api": {"limit": 0}}}),
        content_type="application/json",
    )

    assert response.status_code == 404
    with context.tenant_context(other_org.tenant):
        assert ApiKey.objects.get(pk=theirs["id"]).rate_limits == {}


@pytest.mark.parametrize(
    "rate_limits",
    [
        {"publish": {"limit": 1}},
        {"api": {"limit": -1}},
        {"api": {"limit": 1, "window_seconds": 0}},
        {"api": {"limit": 1, "window_seconds": 86401}},
        {"api": {"limit": True}},
        {"api": {"limit": 1, "burst": 2}},
        {"api": 5},
        ["api", 5],
    ],
)
def test_bad_key_limits_are_400_and_create_nothing(org, client_for, rate_limits):
    response = create_key(client_for(org, org.admin), rate_limits)

    assert response.status_code == 400, response.content
    assert "rate_limits" in response.json()["error"]["detail"]
    with context.tenant_context(org.tenant):
        assert not ApiKey.objects.exists()


def test_limits_changed_later_apply_to_the_next_request(org, client_for):
    admin = client_for(org, org.admin)
    created = create_key(admin).json()
    client = client_for(org)
    assert client.get("/api/v1/agents/", **api_key_header(created["key"])).status_code == 200

    admin.patch(
        f"{KEYS}{created['id']}/",
        data=json.dumps({"rate_limits": {"api": {"limit": 0}}}),
        content_type="application/json",
    )
    refused = client.get("/api/v1/agents/", **api_key_header(created["key"]))
    admin.patch(
        f"{KEYS}{created['id']}/",
        data=json.dumps({"rate_limits": {}}),
        content_type="application/json",
    )
    served = client.get("/api/v1/agents/", **api_key_header(created["key"]))

    assert refused.status_code == 429 and refused["RateLimit-Policy"] == '"api.key";q=0;w=60'
    assert served.status_code == 200


def test_an_empty_patch_changes_nothing_and_records_nothing(org, other_org, client_for):
    """A PATCH changes what it names (the document's `PatchedApiKeyLimitsInputRequest`)."""
    raw_key = create_key(client_for(org, org.admin), rate_limits={"api": {"limit": 5}}).json()
    path = f"{KEYS}{raw_key['id']}/"

    unchanged = client_for(org, org.admin).patch(path, data="{}", content_type="application/json")
    foreign = client_for(other_org, other_org.admin).patch(
        path, data="{}", content_type="application/json"
    )

    assert unchanged.status_code == 200
    assert unchanged.json()["rate_limits"] == {"api": {"limit": 5, "window_seconds": 60}}
    assert foreign.status_code == 404
    with context.tenant_context(org.tenant):
        assert not AuditEvent.objects.filter(action="api_key.limits_changed").exists()

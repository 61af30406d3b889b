"""`Idempotency-Key` on the API's POSTs (core.api.ApiView, idempotency.store): a retry with the
same key and body replays the first response without doing the work again, another body is a
422, racing retries do the work once, and keys belong to their organization and caller."""

from __future__ import annotations

import json
import threading
import uuid
from datetime import timedelta

import pytest
from django.db import connection
from django.test import Client
from django.utils import timezone

from agents.models import Agent, AgentInstance
from credentials.models import ApiKey
from idempotency.models import IdempotencyRecord
from tenants import context
from tests.credentials.helpers import bearer, error_code, token_pair


def post(client, path, data, key=None, **headers):
    if key is not None:
        headers["HTTP_IDEMPOTENCY_KEY"] = key
    return client.post(path, data=json.dumps(data), content_type="application/json", **headers)


def agents_named(org, name: str) -> int:
    with context.tenant_context(org.tenant):
        return Agent.objects.filter(name=name).count()


def body(name: str) -> dict:
    return {"name": name, "type": "worker", "cpu": "100m", "memory": "64MB"}


def test_a_retry_replays_the_first_response(org, client_for):
    headers = bearer(token_pair(org, org.owner).access)
    key = str(uuid.uuid4())
    first = post(client_for(org), "/api/v1/agents/", body("Once"), key, **headers)
    again = post(client_for(org), "/api/v1/agents/", body("Once"), key, **headers)
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert again["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first
    assert agents_named(org, "Once") == 1


def test_another_body_under_the_same_key_is_a_422(org, client_for):
    headers = bearer(token_pair(org, org.owner).access)
    key = str(uuid.uuid4())
    assert (
        post(client_for(org), "/api/v1/agents/", body("First"), key, **headers).status_code == 201
    )
    other = post(client_for(org), "/api/v1/agents/", body("Second"), key, **headers)
    assert other.status_code == 422
    assert error_code(other) == "idempotency_key_reused"
    assert agents_named(org, "Second") == 0


def test_every_creating_post_honours_the_key(org, client_for):
    from tests.agents.conftest import make_agent

    headers = bearer(token_pair(org, org.owner).access)
    with context.tenant_context(org.tenant):
        agent = make_agent(name="Host")
        instances = AgentInstance.objects.count()
        keys = ApiKey.objects.count()
    cases = [
        (f"/api/v1/agents/{agent.pk}/instances/", {}),
        ("/api/v1/api-keys/", {"name": "idem", "scopes": ["org:read"]}),
        ("/api/v1/tasks/", {"task": {"kind": "echo"}}),
    ]
    for path, data in cases:
        key = str(uuid.uuid4())
        first = post(client_for(org), path, data, key, **headers)
        again = post(client_for(org), path, data, key, **headers)
        assert first.status_code in {201, 202}, first.content
        assert (again.status_code, again.json()) == (first.status_code, first.json()), path
    with context.tenant_context(org.tenant):
        assert AgentInstance.objects.count() == instances + 1
        assert ApiKey.objects.count() == keys + 1


def test_the_stored_response_is_not_readable_without_the_key(org, client_for):
    """An API key's secret is in its creation response: the kept copy is encrypted under a key
    derived from the client's Idempotency-Key, which is itself kept only as an HMAC."""
    headers = bearer(token_pair(org, org.owner).access)
    key = str(uuid.uuid4())
    created = post(
        client_for(org), "/api/v1/api-keys/", {"name": "s", "scopes": ["org:read"]}, key, **headers
    )
    secret = created.json()["key"]
    with context.tenant_context(org.tenant), connection.cursor() as cursor:
        cursor.execute(
            "SELECT key_id, body::text, headers::text FROM idempotency_idempotencyrecord"
        )
        rows = cursor.fetchall()
    assert rows and all(key not in str(row) and secret not in str(row) for row in rows)


def test_keys_belong_to_their_caller_and_organization(org, other_org, client_for):
    key = str(uuid.uuid4())
    owner = bearer(token_pair(org, org.owner).access)
    admin = bearer(token_pair(org, org.admin).access)
    other = bearer(token_pair(other_org, other_org.owner).access)
    assert post(client_for(org), "/api/v1/agents/", body("Mine"), key, **owner).status_code == 201
    mine_too = post(client_for(org), "/api/v1/agents/", body("Mine too"), key, **admin)
    assert mine_too.status_code == 201
    theirs = post(client_for(other_org), "/api/v1/agents/", body("Mine"), key, **other)
    assert theirs.status_code == 201 and "Idempotent-Replayed" not in theirs
    assert agents_named(org, "Mine") == agents_named(org, "Mine too") == 1
    assert agents_named(other_org, "Mine") == 1


def test_an_error_is_not_kept_and_an_expired_key_runs_again(org, client_for):
    headers = bearer(token_pair(org, org.owner).access)
    key = str(uuid.uuid4())
    bad = post(client_for(org), "/api/v1/agents/", {"name": "X", "type": "worker"}, key, **headers)
    assert bad.status_code == 400
    with context.tenant_context(org.tenant):
        assert IdempotencyRecord.objects.count() == 0
    assert post(client_for(org), "/api/v1/agents/", body("Late"), key, **headers).status_code == 201
    with context.tenant_context(org.tenant):
        IdempotencyRecord.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    again = post(client_for(org), "/api/v1/agents/", body("Late"), key, **headers)
    # Done again, not replayed: this time the name is taken (by the first), a conflict.
    assert again.status_code == 409 and "Idempotent-Replayed" not in again
    assert agents_named(org, "Late") == 1


@pytest.mark.parametrize("key", ["", " lead", "é", "x" * 256, "a\tb"])
def test_a_malformed_key_is_a_400(org, client_for, key):
    headers = bearer(token_pair(org, org.owner).access)
    response = post(client_for(org), "/api/v1/agents/", body("Bad key"), key, **headers)
    assert response.status_code == 400
    assert agents_named(org, "Bad key") == 0


def test_racing_retries_do_the_work_once(scratch_org, django_db_blocker):
    """Eight retries of one request at once, each on its own connection: one agent, eight
    identical 201s."""
    with django_db_blocker.unblock():
        headers = bearer(token_pair(scratch_org, scratch_org.owner).access)
        key = str(uuid.uuid4())
        start = threading.Barrier(8)
        results: list = []

        def retry() -> None:
            client = Client(HTTP_HOST=scratch_org.host, raise_request_exception=False)
            start.wait()
            try:
                response = post(client, "/api/v1/agents/", body("Raced"), key, **headers)
                results.append((response.status_code, response.json()))
            finally:
                connection.close()

        threads = [threading.Thread(target=retry) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert len(results) == 8
        assert {status for status, _ in results} == {201}
        assert len({data["id"] for _, data in results}) == 1
        assert agents_named(scratch_org, "Raced") == 1

"""PostgreSQL or Redis unreachable: 503 with Retry-After in the error shape, never a 500; the app
recovers without a restart; under writes with the database dropping every connection, no
acknowledged write is lost and retries with an Idempotency-Key never duplicate."""

from __future__ import annotations

import json
import threading
import time
import uuid

from django.db import close_old_connections, connection
from django.test import Client

from agents.models import Agent
from tenants import context
from tests.credentials.helpers import bearer, token_pair


def in_thread(function):
    """Run `function` in a thread (its own database connection) and return its result."""
    box: dict = {}

    def run() -> None:
        try:
            box["result"] = function()
        except BaseException as error:  # noqa: BLE001 - handed back to the test
            box["error"] = error
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(60)
    if "error" in box:
        raise box["error"]
    return box["result"]


def with_database_down(function):
    """`function` in a thread whose connection points at a port where nothing listens."""

    def run():
        connection.close()
        connection.settings_dict = {**connection.settings_dict, "PORT": "1"}
        return function()

    return in_thread(run)


def test_database_down_is_a_503_everywhere_then_recovers(scratch_org, django_db_blocker, caplog):
    with django_db_blocker.unblock():
        headers = bearer(token_pair(scratch_org, scratch_org.owner).access)

        def requests():
            from tenants import routing

            routing.clear()  # the host must be looked up in the (unreachable) database
            client = Client(HTTP_HOST=scratch_org.host, raise_request_exception=False)
            public = Client(raise_request_exception=False)
            agent = {"name": "Down", "type": "worker", "cpu": "100m", "memory": "64MB"}
            return [
                client.get("/api/v1/agents/", **headers),
                client.post(
                    "/api/v1/agents/",
                    data=json.dumps(agent),
                    content_type="application/json",
                    **headers,
                ),
                client.get("/login/"),
                client.get("/api/v1/organization/", **headers),
                public.get("/signup/", HTTP_HOST="localhost"),
            ]

        responses = with_database_down(requests)
        # The public signup form needs no database to show; everything else does.
        assert responses.pop().status_code in {200, 503}
        for response in responses:
            assert response.status_code == 503, response.content[:300]
            assert response["Retry-After"] == "5"
        for api in responses[:2] + responses[3:4]:
            assert api.json()["error"]["code"] == "database_unavailable"
        # Back up: the same process answers again, without a restart.
        client = Client(HTTP_HOST=scratch_org.host, raise_request_exception=False)
        assert in_thread(lambda: client.get("/api/v1/agents/", **headers).status_code) == 200


def test_redis_down_is_never_a_500(org, client_for, settings):
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": "redis://127.0.0.1:1/0",
            "OPTIONS": {"socket_connect_timeout": 0.2, "socket_timeout": 0.2},
        }
    }
    client = Client(HTTP_HOST=org.host, raise_request_exception=False)
    headers = bearer(token_pair(org, org.owner).access)
    agent = {"name": "No redis", "type": "worker", "cpu": "100m", "memory": "64MB"}
    responses = {
        "list": client.get("/api/v1/agents/", **headers),
        "create": client.post(
            "/api/v1/agents/", data=json.dumps(agent), content_type="application/json", **headers
        ),
        "config": client.get("/api/v1/config/agents/worker/", **headers),
        "sign-in": client.post(
            "/api/v1/auth/token",
            data=json.dumps({"username": "owner@acme.test", "password": "x"}),
            content_type="application/json",
        ),
        "key": client.post(
            "/api/v1/api-keys/",
            data=json.dumps({"name": "r", "scopes": ["org:read"]}),
            content_type="application/json",
            **headers,
        ),
    }
    for name, response in responses.items():
        assert response.status_code < 500 or response.status_code == 503, (name, response.content)
        if response.status_code == 503:
            assert response["Retry-After"]
    # The written policy (docs/operations.md): reads and agent writes carry on, sign-in and key
    # creation fail closed.
    assert responses["list"].status_code == 200
    assert responses["create"].status_code == 201
    assert responses["sign-in"].status_code == 503
    assert responses["key"].status_code == 503


def test_writes_survive_the_database_dropping_every_connection(scratch_org, django_db_blocker):
    """Writers create agents with Idempotency-Keys, retrying on 503, while every connection to
    the database is terminated again and again (pg_terminate_backend: a restart, for this
    database only). No 500; every agent acknowledged exists; no key made two."""
    with django_db_blocker.unblock():
        headers = bearer(token_pair(scratch_org, scratch_org.owner).access)
        prefix = f"F{uuid.uuid4().hex[:6]}"
        statuses: list[int] = []
        acknowledged: dict[str, str] = {}
        stop = threading.Event()
        lock = threading.Lock()

        def writer(number: int) -> None:
            client = Client(HTTP_HOST=scratch_org.host, raise_request_exception=False)
            try:
                for item in range(6):
                    name = f"{prefix}-{number}-{item}"
                    key = str(uuid.uuid4())
                    data = {"name": name, "type": "worker", "cpu": "10m", "memory": "16MB"}
                    for _ in range(100):
                        response = client.post(
                            "/api/v1/agents/",
                            data=json.dumps(data),
                            content_type="application/json",
                            HTTP_IDEMPOTENCY_KEY=key,
                            **headers,
                        )
                        # What a server does when a request ends (the test client skips it):
                        # drop a connection that broke, so the next request reconnects.
                        close_old_connections()
                        with lock:
                            statuses.append(response.status_code)
                        if response.status_code == 201:
                            with lock:
                                acknowledged[name] = response.json()["id"]
                            break
                        time.sleep(0.05)
            finally:
                connection.close()

        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            spared = cursor.fetchone()[0]  # the test's own connection
        kills: list[int] = []

        def killer() -> None:
            try:
                while not stop.is_set():
                    with connection.cursor() as cursor:
                        cursor.execute(
                            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                            "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                            "AND pid <> %s",
                            [spared],
                        )
                        kills.append(cursor.fetchone()[0])
                    stop.wait(0.4)
            finally:
                connection.close()

        writers = [threading.Thread(target=writer, args=(n,)) for n in range(3)]
        chaos = threading.Thread(target=killer)
        chaos.start()
        for thread in writers:
            thread.start()
        for thread in writers:
            thread.join(120)
        stop.set()
        chaos.join(10)

        assert set(statuses) <= {201, 503}, sorted(set(statuses))
        assert 503 in statuses and sum(kills) > 0  # the outage did happen
        assert len(acknowledged) == 18
        connection.close()
        with context.tenant_context(scratch_org.tenant):
            stored = dict(Agent.objects.filter(name__startswith=prefix).values_list("name", "pk"))
        assert {name: str(pk) for name, pk in stored.items()} == acknowledged

"""The gateway's database calls ping the server at most every GATEWAY_DB_HEALTH_CHECK_SECONDS."""

from __future__ import annotations

import asyncio

import pytest
from django.db import connection

from gateway.db import database_sync_to_async
from tenants import context


@pytest.fixture(autouse=True)
def _database(django_db_setup, django_db_blocker):
    with django_db_blocker.unblock():
        yield


def _touch() -> bool:
    with context.public_context(), connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    connection.close_at = None  # a persistent connection (the tests' CONN_MAX_AGE may be 0)
    return True


def _check_pending() -> bool:
    """Before any query of this call: will its first query ping the server first?"""
    return connection.connection is not None and not connection.health_check_done


def _backend_pid() -> int:
    with context.public_context(), connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cursor.fetchone()[0]


def _close() -> None:
    connection.close()


def test_a_recent_check_is_not_repeated(settings):
    settings.GATEWAY_DB_HEALTH_CHECK_SECONDS = 60

    async def calls() -> list[bool]:
        await database_sync_to_async(_touch)()  # connects (a fresh connection needs no ping)
        first = await database_sync_to_async(_check_pending)()  # the first check of the interval
        await database_sync_to_async(_touch)()
        second = await database_sync_to_async(_check_pending)()
        await database_sync_to_async(_close)()
        return [first, second]

    assert asyncio.run(calls()) == [True, False]


def test_a_connection_that_died_fails_one_call_then_is_replaced(settings):
    import psycopg

    settings.GATEWAY_DB_HEALTH_CHECK_SECONDS = 60

    async def calls() -> tuple[int, str, bool, int]:
        await database_sync_to_async(_touch)()
        pid = await database_sync_to_async(_backend_pid)()
        with psycopg.connect(_url(settings), autocommit=True) as other:
            other.execute("SELECT pg_terminate_backend(%s)", [pid])
        try:
            await database_sync_to_async(_touch)()
            failed = ""
        except Exception as error:  # the one call that meets the dead connection
            failed = type(error).__name__
        recovered = await database_sync_to_async(_touch)()
        new_pid = await database_sync_to_async(_backend_pid)()
        await database_sync_to_async(_close)()
        return pid, failed, recovered, new_pid

    pid, failed, recovered, new_pid = asyncio.run(calls())
    assert failed in {"OperationalError", "InterfaceError"}
    assert recovered is True and new_pid != pid


def _url(settings) -> str:
    db = settings.DATABASES["default"]
    return (
        f"postgresql://{db['USER']}:{db['PASSWORD']}@{db['HOST']}:{db['PORT'] or 5432}/{db['NAME']}"
    )


def test_without_an_interval_every_call_checks(settings):
    settings.GATEWAY_DB_HEALTH_CHECK_SECONDS = 0

    async def calls() -> list[bool]:
        await database_sync_to_async(_touch)()
        pending = [await database_sync_to_async(_check_pending)() for _ in range(3)]
        await database_sync_to_async(_close)()
        return pending

    assert asyncio.run(calls()) == [True, True, True]

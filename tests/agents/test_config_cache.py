"""The config cache: per organization, invalidated by writes in every process (two processes)."""

from __future__ import annotations

import json
import subprocess
import textwrap

from django.conf import settings
from django.db import connection
from django.test.utils import CaptureQueriesContext

from agents import config_cache, selectors, services
from core.actors import Actor
from tenants import context
from tests import live
from tests.agents.conftest import system

# A second process: reads the resolved config of `worker` agents for each line on stdin and
# prints the value and the number of SQL queries the read took.
READER = textwrap.dedent(
    """
    import json, sys
    import django
    django.setup()
    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from agents import selectors
    from core.actors import Actor
    from tenants import context
    from tenants.models import Tenant

    with context.public_context():
        tenant = Tenant.objects.select_related("plan").get(slug=sys.argv[1])
    print("ready", flush=True)
    for _ in sys.stdin:
        with context.tenant_context(tenant), CaptureQueriesContext(connection) as queries:
            value = selectors.config_resolve(actor=Actor.system(), agent_type="worker").value
        print(json.dumps({"value": value, "queries": len(queries)}), flush=True)
    """
)


def start_reader(slug: str) -> subprocess.Popen:
    reader = live.python(READER, slug)
    assert reader.stdout.readline().strip() == "ready"
    return reader


def read(reader: subprocess.Popen) -> dict:
    reader.stdin.write("read\n")
    reader.stdin.flush()
    return json.loads(reader.stdout.readline())


def test_a_write_invalidates_the_cache_in_another_process(scratch_org):
    assert settings.CACHES["default"]["BACKEND"].endswith("RedisCache")
    tenant = scratch_org.tenant
    admin = Actor.for_user(scratch_org.admin)
    with context.tenant_context(tenant):
        services.config_set(actor=admin, key="agents.worker", value={"timeout": 10})
    reader = start_reader(tenant.slug)
    try:
        first, cached = read(reader), read(reader)

        with context.tenant_context(tenant):
            services.config_set(actor=admin, key="agents.worker", value={"timeout": 20})
        after_write, cached_again = read(reader), read(reader)
    finally:
        live.stop(reader)

    # A cold read: into public and back (search_path), the platform defaults, the organization's
    # keys. After the write only the organization's namespace is read again.
    assert first == {"value": {"timeout": 10}, "queries": 4}
    assert cached == {"value": {"timeout": 10}, "queries": 0}
    assert after_write == {"value": {"timeout": 20}, "queries": 2}
    assert cached_again == {"value": {"timeout": 20}, "queries": 0}


def test_a_platform_default_written_by_staff_reaches_every_process(scratch_org):
    tenant = scratch_org.tenant
    reader = start_reader(tenant.slug)
    try:
        before = read(reader)
        services.platform_config_default_set(
            actor=system(), key="agents.worker", value={"region_hint": "eu"}
        )
        after = read(reader)
    finally:
        services.platform_config_default_delete(actor=system(), key="agents.worker")
        live.stop(reader)

    assert before["value"] == {}
    assert after["value"] == {"region_hint": "eu"}


def test_cache_keys_carry_the_organization(
    org, other_org, in_tenant, django_capture_on_commit_callbacks
):
    with in_tenant(org), django_capture_on_commit_callbacks(execute=True):
        services.config_set(actor=system(), key="agents.defaults", value={"owner": "acme"})
    with in_tenant(org):
        acme = selectors.config_resolve(actor=system(), agent_type="worker").value
    with in_tenant(other_org):
        globex = selectors.config_resolve(actor=system(), agent_type="worker").value

    assert (acme, globex) == ({"owner": "acme"}, {})


def test_a_cached_read_runs_no_query_and_an_uncached_one_reads_the_database(
    org, in_tenant, django_capture_on_commit_callbacks
):
    with in_tenant(org):
        with django_capture_on_commit_callbacks(execute=True):
            services.config_set(actor=system(), key="agents.worker", value={"a": 1})
        selectors.config_resolve(actor=system(), agent_type="worker")

        with CaptureQueriesContext(connection) as cached:
            hit = selectors.config_resolve(actor=system(), agent_type="worker")
        with CaptureQueriesContext(connection) as uncached:
            miss = selectors.config_resolve(actor=system(), agent_type="worker", use_cache=False)

    assert hit.value == miss.value == {"a": 1}
    assert len(cached) == 0
    # Into public and back (search_path), the platform defaults, the organization's keys.
    assert [q["sql"].split()[0] for q in uncached] == ["SET", "SELECT", "SET", "SELECT"]


def test_redis_trouble_falls_back_to_the_database(org, in_tenant, monkeypatch):
    def broken(*args, **kwargs):
        raise ConnectionError("redis is down")

    with in_tenant(org):
        services.config_set(actor=system(), key="agents.worker", value={"a": 2})
        monkeypatch.setattr(config_cache.cache, "get_many", broken)

        value = selectors.config_resolve(actor=system(), agent_type="worker").value

    assert value == {"a": 2}


def test_a_warm_read_is_one_cache_round_trip_and_a_write_costs_one_more(
    org, in_tenant, monkeypatch, django_capture_on_commit_callbacks
):
    calls: list[int] = []
    real = config_cache.cache.get_many

    def counted(keys, *args, **kwargs):
        calls.append(len(keys))
        return real(keys, *args, **kwargs)

    with in_tenant(org):
        selectors.config_resolve(actor=system(), agent_type="worker")
        monkeypatch.setattr(config_cache.cache, "get_many", counted)

        warm = selectors.config_resolve(actor=system(), agent_type="worker").value
        warm_calls, calls[:] = list(calls), []
        with django_capture_on_commit_callbacks(execute=True):
            services.config_set(actor=system(), key="agents.worker", value={"b": 1})
        after_write = selectors.config_resolve(actor=system(), agent_type="worker").value

    assert (warm, after_write) == ({}, {"b": 1})
    assert warm_calls == [6]  # 2 generations + 4 values (2 keys x platform, organization)
    assert calls == [6, 2]  # the organization's generation moved: its 2 values again

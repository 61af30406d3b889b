"""Tool services: the host API (organization from the run, permissions from the version),
agents' runs by name, the audit trail, and the per-organization concurrency cap."""

from __future__ import annotations

import threading
import time

import pytest
from django.core.exceptions import PermissionDenied
from django.db import connection

from agents import services as agent_services
from agents.models import Agent
from audit.models import AuditEvent
from billing import selectors as billing_selectors
from core.actors import Actor
from core.errors import ConcurrencyLimited
from tenants import context
from tests.agents.conftest import make_agent
from tests.tools.conftest import ECHO, make_tool, system
from tools import pool, services
from tools.models import Tool, ToolValue

KV_TOOL = """
async function run(input, api) {
  if (input.write !== undefined) await api.kv.write(input.key, input.write);
  return await api.kv.read(input.key);
}
"""


def run(tool, value, actor=None, **options):
    return services.tool_run(actor=actor or system(), tool_id=tool.pk, input=value, **options)


def test_kv_round_trip_in_the_organizations_own_store(org, other_org, in_tenant):
    with in_tenant(org):
        tool = make_tool("kv", KV_TOOL, permissions=["kv:read", "kv:write"])
        wrote = run(tool, {"key": "greeting", "write": {"text": "hi"}})
        stored = ToolValue.objects.get(key="greeting")
        written = AuditEvent.objects.get(action="tool.kv_written")
    with in_tenant(other_org):
        twin = make_tool("kv", KV_TOOL, permissions=["kv:read", "kv:write"])
        theirs = run(twin, {"key": "greeting"})
    assert wrote.output == {"text": "hi"}
    assert stored.value == {"text": "hi"}
    assert written.actor_kind == "system" and written.actor_label.startswith("tool kv v1")
    assert theirs.status == "ok" and theirs.output is None  # B's store: A's key is not there


def test_an_organization_id_passed_as_an_argument_changes_nothing(org, other_org, in_tenant):
    with in_tenant(other_org):
        ToolValue.objects.create(key="secret", value="B's")
    probe = (
        "async function run(input, api) { const code = e => e.code; return ["
        " await api.kv.read('secret').catch(code),"
        " await api.kv.read('secret', input.org).catch(code),"
        " await api.kv.read(input.org + ':secret').catch(code)] }"
    )
    with in_tenant(org):
        tool = make_tool("probe", probe, permissions=["kv:read"])
        result = run(tool, {"org": str(other_org.tenant.public_id)})
    # A's store has no such key; a second argument is refused; a prefixed key is just a key.
    assert result.output == [None, "invalid", None]


def test_config_read_reads_the_runs_organization(org, other_org, in_tenant):
    with in_tenant(org):
        agent_services.config_set(actor=system(), key="tools.region", value="eu")
    with in_tenant(other_org):
        agent_services.config_set(actor=system(), key="tools.region", value="us")
        tool = make_tool(
            "cfg",
            "async function run(i, api) { return await api.config.read('tools.region') }",
            permissions=["config:read"],
        )
        result = run(tool, {})
    assert result.output == "us"


def test_functions_not_granted_are_absent_and_refused_by_the_server(org, in_tenant):
    with in_tenant(org):
        tool = make_tool(
            "nokv", "async function run(i, api) { return [typeof api.kv, Object.keys(api)] }"
        )
        result = run(tool, {})
        handed = services._Run(
            tenant=org.tenant,
            tool=tool,
            version=tool.versions.get(),
            functions=frozenset(),
            actor=system(),
            caller=system(),
        )
        with pytest.raises(pool.HostError) as refused:
            services._host(handed, "kv.write", ["k", 1])
        with pytest.raises(pool.HostError) as unknown:
            services._host(handed, "os.exec", ["ls"])
    assert result.output == ["undefined", []]
    assert refused.value.code == "permission_denied"
    assert unknown.value.code == "unknown_function"
    with in_tenant(org):
        assert not ToolValue.objects.exists()


def test_a_host_call_outside_the_runs_organization_is_refused(org, other_org, in_tenant):
    with in_tenant(org):
        tool = make_tool("kv", KV_TOOL, permissions=["kv:read", "kv:write"])
        handed = services._Run(
            tenant=org.tenant,
            tool=tool,
            version=tool.versions.get(),
            functions=frozenset({"kv.read", "kv.write"}),
            actor=system(),
            caller=system(),
        )
    with in_tenant(other_org):
        with pytest.raises(pool.HostError) as refused:
            services._host(handed, "kv.write", ["k", 1])
        assert not ToolValue.objects.exists()
    assert refused.value.code == "forbidden"


def test_a_plan_downgrade_takes_permissions_away_at_the_next_run(org, in_tenant):
    from tenants.models import Plan

    with in_tenant(org):
        tool = make_tool("kv", KV_TOOL, permissions=["kv:read", "kv:write"])
    with context.public_context():
        Plan.objects.filter(pk=org.tenant.plan_id).update(allowed_tool_permissions=["kv:read"])
    with in_tenant(org):
        result = run(tool, {"key": "a", "write": 1})
    assert result.status == "error"
    assert "kv.write is not a function" in result.error["message"]


def test_publish_goes_to_the_organizations_tools_subject(
    org, in_tenant, listen, django_capture_on_commit_callbacks
):
    receive = listen(org.tenant, "tools.report")
    with in_tenant(org), django_capture_on_commit_callbacks(execute=True):
        tool = make_tool(
            "pub",
            "async function run(i, api) { await api.publish('report', {n: i.n}); return 1 }",
            permissions=["publish"],
        )
        result = run(tool, {"n": 7})
    assert result.status == "ok"
    message = receive()
    assert message["subject"] == "tools.report"
    assert message["tenant"] == str(org.tenant.public_id)
    assert message["data"] == {"tool": "pub", "version": 1, "data": {"n": 7}}


def test_a_bad_subject_is_refused(org, in_tenant):
    with in_tenant(org):
        tool = make_tool(
            "pub",
            "async function run(i, api) { try { await api.publish('a..b', 1) }"
            " catch (e) { return e.code } }",
            permissions=["publish"],
        )
        assert run(tool, {}).output == "invalid"


def test_the_kv_store_is_capped(org, in_tenant, settings):
    settings.TOOLS_KV_MAX_KEYS = 2
    code = (
        "async function run(i, api) { for (const k of ['a', 'b', 'c']) {"
        " try { await api.kv.write(k, 1) } catch (e) { return [k, e.code] } } }"
    )
    with in_tenant(org):
        tool = make_tool("fill", code, permissions=["kv:write"])
        assert run(tool, {}).output == ["c", "quota_exceeded"]
        assert ToolValue.objects.count() == 2


def test_running_needs_tools_run_and_a_refusal_is_recorded(org, in_tenant):
    with in_tenant(org):
        tool = make_tool()
        viewer = Actor.for_user(org.viewer)
        with pytest.raises(PermissionDenied):
            run(tool, {}, actor=viewer)
        denied = AuditEvent.objects.get(action="tool.run")
    assert denied.result == "denied"


def test_runs_are_metered_on_the_ledger_per_organization_and_tool(org, other_org, in_tenant):
    with in_tenant(org):
        tool = make_tool()
        run(tool, {"name": "a"})
        run(tool, {"name": "b"})
        runs = billing_selectors.usage_report(
            actor=system(), meter="tool_runs", granularity="hour", group_by="tool"
        )
        cpu = billing_selectors.usage_report(actor=system(), meter="tool_cpu_ms")
    assert runs.total == 2
    assert [b["groups"] for b in runs.buckets if b["value"]] == [{tool.name: 2}]
    assert cpu.total >= 0 and cpu.meter.unit == "ms"
    with in_tenant(other_org):
        theirs = billing_selectors.usage_report(actor=system(), meter="tool_runs")
    assert theirs.total == 0


# --- Agents ----------------------------------------------------------------------------------


def test_an_agent_runs_the_tools_it_lists_and_the_version_it_pins(org, in_tenant):
    with in_tenant(org):
        tool = make_tool("greet", "function run(i) { return 'v1' }")
        services.tool_update(actor=system(), tool_id=tool.pk, code="function run() { return 'v2' }")
        pinned = make_agent("Pinned", tools=["greet@1"], permissions=["tools:invoke"])
        latest = make_agent("Latest", tools=["greet"], permissions=["tools:invoke"])
        without = make_agent("Without", tools=[], permissions=["tools:invoke"])
        no_permission = make_agent("Nope", tools=["greet"], permissions=[])
        member = Actor.for_user(org.member)

        def call(agent):
            return services.agent_tool_run(actor=member, agent_id=agent.pk, name="greet", input={})

        assert (call(pinned).output, call(pinned).version) == ("v1", 1)
        assert (call(latest).output, call(latest).version) == ("v2", 2)
        with pytest.raises(Tool.DoesNotExist):
            call(without)
        with pytest.raises(PermissionDenied):
            call(no_permission)
        event = AuditEvent.objects.filter(action="tool.run", result="success").first()
        assert event.details["agent"] in {str(pinned.pk), str(latest.pk)}


def test_an_agent_of_another_organization_is_not_found(org, other_org, in_tenant):
    with in_tenant(org):
        make_tool("greet")
        agent = make_agent("A", tools=["greet"], permissions=["tools:invoke"])
    with in_tenant(other_org):
        make_tool("greet")
        with pytest.raises(Agent.DoesNotExist):
            services.agent_tool_run(
                actor=Actor.for_user(other_org.owner), agent_id=agent.pk, name="greet", input={}
            )


# --- Concurrency -----------------------------------------------------------------------------


# Long, but idle: on two cores, CPU-bound floods compete with everyone for the CPU (docs/tools.md).
SLOW = "async function run() { await new Promise(r => setTimeout(r, 3000)); return 1 }"


def test_one_organizations_flood_does_not_delay_another(scratch_org, _orgs, settings):
    """200 concurrent long runs of organization A: A's cap runs, the rest get 429 after a brief
    wait; B's run, while A's runs go on, starts at once and finishes in its normal time."""
    settings.TOOLS_CONCURRENCY_WAIT_SECONDS = 0.3
    flood, other = scratch_org, _orgs["globex"]
    cap = flood.tenant.plan.tool_concurrency
    assert cap < pool.get_pool().size
    with context.tenant_context(flood.tenant):
        slow = make_tool("slow", SLOW, timeout_ms=5000)
    with context.tenant_context(other.tenant):
        quick = make_tool("quick-probe", ECHO)
    try:
        with context.tenant_context(other.tenant):
            run(quick, {})  # warm: the pool is started
        deadline = time.monotonic() + 30
        while pool.get_pool().stats()["idle"] < pool.get_pool().size:  # every worker is up
            assert time.monotonic() < deadline
            time.sleep(0.05)
        with context.tenant_context(other.tenant):
            baseline_started = time.monotonic()
            run(quick, {})
            baseline = time.monotonic() - baseline_started
        outcomes: list[str] = []
        lock = threading.Lock()
        release = threading.Barrier(201)

        def flood_one() -> None:
            with context.tenant_context(flood.tenant):
                release.wait()
                try:
                    result = run(slow, {})
                    outcome = result.status
                except ConcurrencyLimited:
                    outcome = "429"
                finally:
                    connection.close()
            with lock:
                outcomes.append(outcome)

        threads = [threading.Thread(target=flood_one) for _ in range(200)]
        for thread in threads:
            thread.start()
        release.wait()
        deadline = time.monotonic() + 2.5
        while len(outcomes) < 200 - cap:  # every run over A's cap was turned away ...
            assert time.monotonic() < deadline, len(outcomes)
            time.sleep(0.02)
        assert outcomes == ["429"] * (200 - cap)  # ... while A's capped runs still go on
        with context.tenant_context(other.tenant):
            started = time.monotonic()
            result = run(quick, {"probe": True})
            elapsed = time.monotonic() - started
        for thread in threads:
            thread.join()
        assert result.status == "ok"
        assert elapsed < baseline + 0.5, (elapsed, baseline)
        assert outcomes.count("ok") == cap
        assert outcomes.count("429") == 200 - cap
    finally:
        with context.tenant_context(other.tenant):
            services.tool_delete(actor=system(), tool_id=quick.pk)
        connection.close()

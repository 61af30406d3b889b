"""A hard monthly quota on tool runs (or on their CPU time) refuses a run before it starts: 429
`quota_exceeded` naming the quota, exactly under concurrency; without a hard quota a run costs
the one Redis call it always did (after the run)."""

from __future__ import annotations

import json
import multiprocessing

import pytest
from django.utils import timezone

from audit.models import AuditEvent
from billing import limits, selectors
from billing import services as billing
from billing.models import PlanQuota
from core.actors import Actor
from core.errors import Unavailable, UsageExhausted
from tenants import context, ratelimit
from tests.billing.helpers import record_usage
from tests.tools.conftest import make_tool, system
from tools import metering, services


@pytest.fixture(autouse=True)
def _fresh():
    limits.forget()
    yield
    limits.forget()


def plan_quota(org, meter: str, limit: int, *, is_hard: bool = True) -> None:
    with context.public_context():
        row = PlanQuota.objects.filter(plan_id=org.tenant.plan_id, meter=meter).first()
    row = row or PlanQuota(plan_id=org.tenant.plan_id, meter=meter)
    row.limit, row.is_hard = limit, is_hard
    billing.plan_limit_save(actor=Actor.system("tests"), plan_limit=row, fields=["limit"])


def runs_this_month(tenant) -> int:
    now = timezone.now()
    start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return selectors.meter_total(tenant=tenant, meter="tool_runs", start=start, end=now)


def run(tool):
    return services.tool_run(actor=system(), tool_id=tool.pk, input={})


def test_a_hard_run_quota_refuses_the_run_before_it_starts_naming_it(org, in_tenant):
    plan_quota(org, "tool_runs", 2)
    with in_tenant(org):
        tool = make_tool()
        outcomes = [run(tool).status for _ in range(2)]
        with pytest.raises(UsageExhausted) as refused:
            run(tool)
        ran = AuditEvent.objects.filter(action="tool.run").count()

    assert outcomes == ["ok", "ok"]
    assert refused.value.code == "quota_exceeded"
    assert refused.value.detail == {
        "quota": {"name": "tool_runs_per_month", "meter": "tool_runs", "limit": 2}
    }
    assert refused.value.retry_after >= 1
    assert ran == 2  # the third never ran
    assert runs_this_month(org.tenant) == 2


def test_over_the_api_the_refusal_is_a_429(org, client_for, in_tenant):
    plan_quota(org, "tool_runs", 1)
    with in_tenant(org):
        tool = make_tool()
    client = client_for(org, org.member)
    path = f"/api/v1/tools/{tool.pk}/runs/"

    first = client.post(path, json.dumps({"input": {}}), content_type="application/json")
    second = client.post(path, json.dumps({"input": {}}), content_type="application/json")

    assert first.status_code == 200
    assert second.status_code == 429
    body = second.json()["error"]
    assert body["code"] == "quota_exceeded"
    assert body["detail"]["quota"]["name"] == "tool_runs_per_month"
    assert int(second["Retry-After"]) >= 1


def test_a_used_up_hard_cpu_quota_refuses_the_next_run(org, in_tenant):
    plan_quota(org, "tool_cpu_ms", 50)
    record_usage(org.tenant, "tool_cpu_ms", 49)
    with in_tenant(org):
        tool = make_tool()
        assert run(tool).status == "ok"  # 49 of 50 used: it may start (its CPU time is after)
        record_usage(org.tenant, "tool_cpu_ms", 1)  # now at least 50
        with pytest.raises(UsageExhausted) as refused:
            run(tool)
    assert refused.value.detail["quota"]["name"] == "tool_cpu_ms_per_month"
    assert runs_this_month(org.tenant) == 1


def test_a_run_that_did_not_start_gives_its_count_back(org, in_tenant, monkeypatch):
    plan_quota(org, "tool_runs", 1)

    def busy(*args, **kwargs):
        raise Unavailable("sandbox_busy", "busy", retry_after=2)

    with in_tenant(org):
        tool = make_tool()
        monkeypatch.setattr(services, "_execute", busy)
        with pytest.raises(Unavailable):
            run(tool)
        monkeypatch.undo()
        assert run(tool).status == "ok"  # the quota's one run was not spent by the failure
    assert runs_this_month(org.tenant) == 1


def test_one_organizations_used_up_quota_does_not_refuse_another(org, other_org, in_tenant):
    plan_quota(org, "tool_runs", 1)
    if other_org.tenant.plan_id != org.tenant.plan_id:
        plan_quota(other_org, "tool_runs", 1)
    with in_tenant(org):
        mine = make_tool()
        run(mine)
        with pytest.raises(UsageExhausted):
            run(mine)
    with in_tenant(other_org):
        theirs = make_tool()
        assert run(theirs).status == "ok"


def test_without_a_hard_quota_a_run_costs_one_redis_call(org, in_tenant, monkeypatch):
    calls = []
    real = ratelimit.run

    def counted(prepared):
        calls.append(prepared)
        return real(prepared)

    monkeypatch.setattr(ratelimit, "run", counted)
    plan_quota(org, "tool_runs", 1000, is_hard=False)  # the Free plan's: soft
    with in_tenant(org):
        tool = make_tool()
        run(tool)  # seeds the month's counters
        calls.clear()
        run(tool)
    soft = len(calls)
    plan_quota(org, "tool_runs", 1000, is_hard=True)
    limits.forget()
    with in_tenant(org):
        run(tool)
        calls.clear()
        run(tool)

    assert soft == 1  # metered after the run only
    assert len(calls) == 2  # checked (and counted) before, CPU time after


def _admit(tenant, attempts: int, queue) -> None:
    allowed = 0
    for _ in range(attempts):
        try:
            metering.admit_tool_run(tenant=tenant, tool="t")
            allowed += 1
        except UsageExhausted as error:
            assert error.code == "quota_exceeded", error
    queue.put(allowed)


def test_a_hard_run_quota_admits_exactly_n_from_4_processes(org):
    plan_quota(org, "tool_runs", 17)
    # The children share this test's database connection: no audit write there (the alerts
    # of quotas are tested in tests/billing/test_quotas.py), so they are marked sent.
    month = timezone.now().strftime("%Y%m")
    counter = f"{billing.QUOTA_PREFIX}:{org.tenant.public_id}:tool_runs:{month}"
    for percent in billing.ALERT_THRESHOLDS:
        ratelimit.redis_client().set(f"{counter}:alert:{percent}", 1, ex=3600)
    metering.admit_tool_run(tenant=org.tenant, tool="t")  # seeds the counter: 1 of 17
    processes = multiprocessing.get_context("fork")
    queue = processes.Queue()
    workers = [processes.Process(target=_admit, args=(org.tenant, 10, queue)) for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    allowed = [queue.get(timeout=5) for _ in workers]

    assert sum(allowed) == 16
    assert all(worker.exitcode == 0 for worker in workers)
    assert runs_this_month(org.tenant) == 17

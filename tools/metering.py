"""Usage of custom tools: one call per run, with the CPU time the sandbox spent on it, metered on
billing's ledger (`tool_runs` and `tool_cpu_ms`, grouped by tool) like every other count.

A hard monthly quota on either meter refuses a run before it starts (`admit_tool_run`: 429
`quota_exceeded`, exact across processes); without one, a run costs one Redis call, after it."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from billing import services as billing
from billing.ledger import Count

if TYPE_CHECKING:
    from tenants.models import Tenant


def _run(tool: str) -> Count:
    return Count(meter="tool_runs", amount=1, groups={"tool": tool})


def admit_tool_run(*, tenant: Tenant, tool: str) -> datetime | None:
    """Before a run: refused past a hard quota on `tool_runs` (this run counted there and then)
    or once a hard `tool_cpu_ms` quota is used up. Returns when the run was counted, or None
    when no hard quota applies (nothing done: `record_tool_run` counts it)."""
    return billing.usage_admit(tenant=tenant, counts=[_run(tool)], checks=("tool_cpu_ms",))


def release_tool_run(*, tenant: Tenant, tool: str, admitted: datetime | None) -> None:
    """The admitted run did not run (no sandbox worker, an error before it started)."""
    if admitted is not None:
        billing.usage_refund(tenant=tenant, counts=[_run(tool)], at=admitted)


def record_tool_run(
    *, tenant: Tenant, tool: str, cpu_ms: float, admitted: datetime | None = None
) -> None:
    groups = {"tool": tool}
    counts = [Count(meter="tool_cpu_ms", amount=round(cpu_ms), groups=groups)]
    if admitted is None:
        counts.insert(0, _run(tool))
    billing.usage_add(tenant=tenant, counts=counts)

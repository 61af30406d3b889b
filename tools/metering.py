"""Usage of custom tools: one call per run, with the CPU time the sandbox spent on it, metered on
billing's ledger (`tool_runs` and `tool_cpu_ms`, grouped by tool) like every other count."""

from __future__ import annotations

from typing import TYPE_CHECKING

from billing import services as billing
from billing.ledger import Count

if TYPE_CHECKING:
    from tenants.models import Tenant


def record_tool_run(*, tenant: Tenant, tool: str, cpu_ms: float) -> None:
    groups = {"tool": tool}
    billing.usage_add(
        tenant=tenant,
        counts=[
            Count(meter="tool_runs", amount=1, groups=groups),
            Count(meter="tool_cpu_ms", amount=round(cpu_ms), groups=groups),
        ],
    )

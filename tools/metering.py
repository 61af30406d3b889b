"""Usage of custom tools: one call per run, with the CPU time the sandbox spent on it.

This is the seam to the platform's meter: it logs one structured line per run (runs and CPU
milliseconds, keyed by the organization), and the run's audit event carries the same figures.
Billing's ledger (hourly counters in Redis) is another issue's work; when it lands, this function
calls its meter (`tool_runs` += 1, `tool_cpu_ms` += cpu_ms) and nothing else here changes.
"""

from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger("agentplane.usage")


def record_tool_run(*, tenant: Any, cpu_ms: float) -> None:
    logger.info(
        "usage tenant=%s meter=tool_runs quantity=1 meter=tool_cpu_ms quantity=%d",
        tenant.public_id,
        round(cpu_ms),
    )

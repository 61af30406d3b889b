"""Strict parsing of resource amounts: CPU (`0.25`, `250m`) and memory (`512MB`, `2GB`, `1.5Gi`).

CPU is counted in millicores, memory in MiB (the unit of the plans' limits). `MB`/`Mi` and
`GB`/`Gi` are the same binary units here, as in most infrastructure consoles. Anything else, zero,
a negative amount, a fraction of the smallest unit, or more than the plan allows per instance is
a ValidationError naming the field.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

from core.errors import field_error

CPU_RE = re.compile(r"^(?:(?P<milli>[0-9]{1,9})m|(?P<cores>[0-9]{1,6}(?:\.[0-9]{1,6})?))$")
MEMORY_RE = re.compile(r"^(?P<amount>[0-9]{1,9}(?:\.[0-9]{1,6})?)(?P<unit>Mi|MB|Gi|GB)$")
MEMORY_UNITS_MB = {"Mi": 1, "MB": 1, "Gi": 1024, "GB": 1024}
MAX_INPUT_LENGTH = 32


def _text(value: Any, field_name: str) -> str:
    # JSON numbers are accepted for CPU (`0.25`), never booleans (True would read as 1 core).
    if isinstance(value, bool) or value is None:
        raise field_error(field_name, "Enter an amount.", "invalid")
    if isinstance(value, int | float | Decimal):
        value = format(Decimal(str(value)), "f")
    if not isinstance(value, str):
        raise field_error(field_name, "Enter an amount as text.", "invalid")
    text = value.strip()
    if not text:
        raise field_error(field_name, "Enter an amount.", "required")
    if len(text) > MAX_INPUT_LENGTH:
        raise field_error(field_name, "Too long.", "invalid")
    return text


def parse_cpu(value: Any, *, field_name: str = "cpu", maximum: int | None = None) -> int:
    """Millicores from `0.25` (cores) or `250m` (millicores)."""
    text = _text(value, field_name)
    match = CPU_RE.fullmatch(text)
    if match is None:
        raise field_error(
            field_name,
            f"“{text}” is not a CPU amount: use cores (0.5) or millicores (500m).",
            "invalid",
        )
    if match["milli"] is not None:
        millicores = Decimal(match["milli"])
    else:
        millicores = Decimal(match["cores"]) * 1000
    if millicores <= 0:
        raise field_error(field_name, "Must be more than zero.", "not_positive")
    if millicores != millicores.to_integral_value():
        raise field_error(
            field_name, "The smallest CPU unit is one millicore (1m, 0.001).", "too_precise"
        )
    result = int(millicores)
    if maximum is not None and result > maximum:
        raise field_error(
            field_name,
            f"Above the plan's maximum per instance ({format_cpu(maximum)}).",
            "above_maximum",
        )
    return result


def parse_memory(value: Any, *, field_name: str = "memory", maximum: int | None = None) -> int:
    """MiB from `512MB`, `512Mi`, `2GB`, `1.5Gi`."""
    text = _text(value, field_name)
    match = MEMORY_RE.fullmatch(text)
    if match is None:
        raise field_error(
            field_name,
            f"“{text}” is not a memory amount: use a number and a unit, "
            "MB, Mi, GB or Gi (for example 512MB or 1.5Gi).",
            "invalid",
        )
    megabytes = Decimal(match["amount"]) * MEMORY_UNITS_MB[match["unit"]]
    if megabytes <= 0:
        raise field_error(field_name, "Must be more than zero.", "not_positive")
    if megabytes != megabytes.to_integral_value():
        raise field_error(field_name, "The smallest memory unit is 1 MB (1 MiB).", "too_precise")
    result = int(megabytes)
    if maximum is not None and result > maximum:
        raise field_error(
            field_name,
            f"Above the plan's maximum per instance ({format_memory(maximum)}).",
            "above_maximum",
        )
    return result


def format_cpu(millicores: int) -> str:
    """`250m` below one core, else cores (`1`, `1.5`)."""
    if millicores < 1000:
        return f"{millicores}m"
    cores = Decimal(millicores) / 1000
    return format(cores.normalize(), "f")


def format_cores(millicores: int) -> str:
    """Cores as a decimal (`0.25`, `1`, `32`), for totals and meters."""
    return format((Decimal(millicores) / 1000).normalize(), "f")


def format_memory(megabytes: int) -> str:
    """`512MB`, `2GB`, `1.5GB` (binary units)."""
    if megabytes >= 1024 and megabytes % 128 == 0:
        gigabytes = Decimal(megabytes) / 1024
        return f"{format(gigabytes.normalize(), 'f')}GB"
    return f"{megabytes}MB"

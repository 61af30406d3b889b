"""What metered usage costs: the staff's price table (per meter unit, per model for LLM tokens)
and each plan's message price, in Decimal with its currency; in Redis, whole nano-units.

The invoice, the Usage page's cost and the spend budgets all price usage here, so they agree.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from billing import limits
from billing.models import Price
from tenants import context

CURRENCY = "USD"
# Budgets count spend in Redis as whole billionths of the currency: the price table's unit
# prices (6 decimals) per 1, 10, 100 or 1,000 units are exact in them.
NANO = Decimal(10**9)
_cache: list[Any] = []  # [(read in period, [Price, ...])]


def prices() -> list[Price]:
    """The price table, read at most once per period per process (billing.limits.period)."""
    now = limits.period()
    if not _cache or _cache[0][0] != now:
        with context.public_context():
            _cache[:] = [(now, list(Price.objects.all()))]
    return _cache[0][1]


def forget() -> None:
    _cache.clear()
    limits.changed()


def price_for(table: Iterable[Price], meter: str, model: str = "") -> Price | None:
    """A meter's price row: the model's own, else the meter's catch-all (empty model)."""
    rows = list(table)
    exact = [p for p in rows if p.meter == meter and p.model == model]
    fallback = [p for p in rows if p.meter == meter and p.model == ""]
    return (exact or fallback or [None])[0]


def unit_price(table: Iterable[Price], plan: Any, meter: str, model: str = "") -> Decimal:
    """What one unit of `meter` costs (zero when unpriced). Messages: the plan's price."""
    if meter == "gateway_messages":
        return Decimal(plan.price_per_thousand_messages_cents) / 100 / 1000
    price = price_for(table, meter, model)
    if price is None:
        return Decimal(0)
    return price.unit_price / price.per_units


def to_nano(amount: Decimal) -> int:
    return int((amount * NANO).to_integral_value(rounding=ROUND_HALF_UP))


def from_nano(value: int) -> Decimal:
    return Decimal(value) / NANO

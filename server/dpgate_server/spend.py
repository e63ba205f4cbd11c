"""Exact privacy spend: epsilon and rho as integers of 1e-9 (nano units).

Budgets are money. Floats are never compared or added in the ledger: every spend is
converted once, rounding *up* (a requester is never charged less than the mechanism
costs), into an integer number of nano units, and composed by integer addition.
"""

from __future__ import annotations

import math
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from fractions import Fraction

UNITS_PER_WHOLE = 10**9
"""Ledger units in one epsilon (pure DP) or one rho (zCDP)."""


def to_units_ceil(value: float | Decimal | Fraction | int) -> int:
    """Convert a spend to ledger units, rounding up; refuses NaN, infinities and negatives."""
    exact = _exact(value)
    if exact < 0:
        raise ValueError(f"a spend cannot be negative: {value!r}")
    return math.ceil(exact * UNITS_PER_WHOLE)


def to_units_floor(value: float | Decimal | Fraction | int) -> int:
    """Convert an allowance (a cap or a grant) to units, rounding down, so it never grows."""
    exact = _exact(value)
    if exact < 0:
        raise ValueError(f"an allowance cannot be negative: {value!r}")
    return math.floor(exact * UNITS_PER_WHOLE)


def units_to_decimal(units: int) -> Decimal:
    """The exact decimal value of `units` (for display and the wire)."""
    return Decimal(units) / Decimal(UNITS_PER_WHOLE)


def units_to_float(units: int) -> float:
    """Nearest float, for display and for noise calibration only, never for accounting."""
    return units / UNITS_PER_WHOLE


def parse_decimal_units(text: str, *, round_up: bool) -> int:
    """Parse a decimal string such as "0.25" into units (for config files and the CLI)."""
    value = Decimal(text)
    if not value.is_finite() or value < 0:
        raise ValueError(f"{text!r} is not a non-negative finite number")
    scaled = value * UNITS_PER_WHOLE
    rounding = ROUND_CEILING if round_up else ROUND_FLOOR
    return int(scaled.to_integral_value(rounding=rounding))


def _exact(value: float | Decimal | Fraction | int) -> Fraction:
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"a spend must be finite: {value!r}")
    if isinstance(value, Decimal) and not value.is_finite():
        raise ValueError(f"a spend must be finite: {value!r}")
    return Fraction(value)

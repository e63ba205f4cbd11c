"""Exact privacy amounts: epsilon and rho as integers of 1e-9 (nano units).

Budgets are money. An amount is converted once into an integer number of nano units and
composed by integer addition; floats are never compared or added. The same integers
travel on the wire (`dpgate.v1.Spend.nano_units`), so what a client sends is what the
ledger stores and what comes back.

People never see nano units: `describe` writes an amount as its measure and an exact
decimal ("epsilon 4.8", "rho 0.25").

Example:
    >>> to_units_exact("4.8", "epsilon")
    4800000000
    >>> describe(4_800_000_000, "pure_dp")
    'epsilon 4.8'
    >>> to_decimal(0.1, "epsilon")
    Decimal('0.1')
"""

from __future__ import annotations

import math
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal, InvalidOperation, localcontext
from fractions import Fraction

UNITS_PER_WHOLE = 10**9
"""Nano units in one epsilon (pure DP) or one rho (zCDP)."""
FRACTION_DIGITS = 9
"""Decimal places an amount may have: one nano unit is 0.000000001."""
SMALLEST = "0.000000001"
"""The smallest amount, as people read it (for messages)."""

Amount = Decimal | float | int | str
"""An epsilon or rho as a person writes it: Decimal("0.5"), 0.5, "0.5" or 1."""

MEASURE_OF = {"pure_dp": "epsilon", "zcdp": "rho"}
"""What an amount measures, by accounting: pure DP spends epsilon, zCDP spends rho."""


def to_decimal(value: Amount, what: str) -> Decimal:
    """`value` as an exact, finite Decimal; a float is read as its shortest repr.

    So 0.1 means Decimal("0.1"), not 0.1000000000000000055511151231257827.

    Raises:
        TypeError: `value` is not a number or a numeric string (a bool is not a number).
        ValueError: `value` is not a number, or is NaN or infinite.
    """
    if isinstance(value, bool) or not isinstance(value, Decimal | float | int | str):
        raise TypeError(f"{what} must be a number, not {type(value).__name__}")
    try:
        exact = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    except InvalidOperation:
        raise ValueError(f"{what} must be a number, not {value!r}") from None
    if not exact.is_finite():
        raise ValueError(f"{what} must be a finite number, not {value!r}")
    return exact


def to_units_exact(value: Amount, what: str) -> int:
    """`value` in nano units, exactly; refuses an amount finer than 0.000000001.

    For amounts an administrator sets (grants, top-ups, caps): they must mean exactly
    what was written, so nothing is rounded.

    Raises:
        TypeError, ValueError: as `to_decimal`; also more than 9 decimal places.
    """
    exact = to_decimal(value, what)
    scaled = exact.scaleb(FRACTION_DIGITS)
    if scaled != scaled.to_integral_value():
        raise ValueError(
            f"{what} {plain(exact)} has more than {FRACTION_DIGITS} decimal places; "
            f"amounts are exact to {SMALLEST}"
        )
    return int(scaled)


def spend_to_units(spend: Decimal) -> int:
    """A query's spend in nano units, rounded down: a query is never charged above it.

    The sign is kept, so that a negative spend reaches the server's check and is refused
    there by name.

    Example:
        >>> spend_to_units(Decimal("0.3000000009"))
        300000000
    """
    return int(spend.scaleb(FRACTION_DIGITS).to_integral_value(rounding=ROUND_FLOOR))


def to_units_floor(value: Amount | Fraction) -> int:
    """`value` in nano units, rounding down: a spend asked for or an allowance never grows.

    Raises:
        ValueError: a negative, NaN or infinite value.
    """
    exact = _fraction(value)
    if exact < 0:
        raise ValueError(f"an amount cannot be negative: {value!r}")
    return math.floor(exact * UNITS_PER_WHOLE)


def to_units_ceil(value: Amount | Fraction) -> int:
    """`value` in nano units, rounding up: a mechanism's cost is never undercharged.

    Raises:
        ValueError: a negative, NaN or infinite value.
    """
    exact = _fraction(value)
    if exact < 0:
        raise ValueError(f"a spend cannot be negative: {value!r}")
    return math.ceil(exact * UNITS_PER_WHOLE)


def parse_decimal_units(text: str, *, round_up: bool) -> int:
    """A decimal string such as "0.25" in nano units (for config files and the CLI)."""
    value = Decimal(text)
    if not value.is_finite() or value < 0:
        raise ValueError(f"{text!r} is not a non-negative finite number")
    rounding = ROUND_CEILING if round_up else ROUND_FLOOR
    return int(value.scaleb(FRACTION_DIGITS).to_integral_value(rounding=rounding))


def units_to_decimal(units: int) -> Decimal:
    """The exact decimal value of `units`: 4_800_000_000 -> Decimal("4.8"), 10**10 -> 10."""
    with localcontext() as context:
        context.prec = max(28, len(str(abs(units))) + 1)  # exact for any integer
        return Decimal(units) / Decimal(UNITS_PER_WHOLE)


def units_to_float(units: int) -> float:
    """Nearest float, for noise calibration and charts only, never for accounting."""
    return units / UNITS_PER_WHOLE


_PLAIN_DIGITS = 27
"""Integer digits below the default decimal context's 28-digit precision."""


def plain(value: Decimal) -> str:
    """An exact decimal as people write it: no exponent, no trailing zeros.

    Example:
        >>> plain(Decimal("0.500000000")), plain(Decimal("2.5E-7")), plain(Decimal("1E+1"))
        ('0.5', '0.00000025', '10')

    A value too large to be a spend anyone meant (a typo, an attack) is shown in
    scientific notation rather than as hundreds of digits:
        >>> plain(Decimal("1E+308")), plain(Decimal("Infinity"))
        ('1.000000E+308', 'Infinity')
    """
    if not value.is_finite():
        return str(value)
    if value.adjusted() >= _PLAIN_DIGITS:
        return format(value, ".6E")
    if value == value.to_integral_value():
        return format(value.quantize(Decimal(1)), "f")
    return format(value.normalize(), "f")


def measure_of(accounting: str) -> str:
    """ "epsilon" for a pure-DP accounting, "rho" for zCDP; "budget" when not known."""
    return MEASURE_OF.get(str(accounting), "budget")


def describe(units: int, accounting: str) -> str:
    """An amount for people: `describe(4_800_000_000, "pure_dp")` is "epsilon 4.8"."""
    return f"{measure_of(accounting)} {plain(units_to_decimal(units))}"


def _fraction(value: Amount | Fraction) -> Fraction:
    """The exact value; a float by its binary value, so rounding up is never undercut."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"an amount must be finite: {value!r}")
    if isinstance(value, Fraction | float | int) and not isinstance(value, bool):
        return Fraction(value)
    return Fraction(to_decimal(value, "an amount"))

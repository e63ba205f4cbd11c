"""Splitting a total spend between queries so that their relative accuracy is equal.

A query's interval half-width is proportional to its noise scale, which is
sensitivity / epsilon under pure DP (Laplace) and sensitivity / sqrt(2 rho) under zCDP
(Gaussian): at spend s it is c / s**p, with p = 1 or 1/2. Knowing each query's half-width
at one spend (from the interval code previews use) gives its c. For a total T and the cell
value e_i the planner expects of query i, the spends that make every c_i / (s_i**p e_i)
the same r are s_i = T w_i / sum(w), with w_i = (c_i / e_i)**(1/p), and then
r = (sum(w) / T)**p. Spends are integers of ledger units: they are rounded down and the
units left over go to the largest remainders, so they add up to T exactly, never more.

Half-widths are integers (the mechanisms are discrete), so the split equalises them up to
that rounding, which matters only for half-widths of a few units.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from dpgate_server.vocabulary.accounting import Accounting


@dataclass(frozen=True, slots=True)
class Split:
    """Spends for each query, and the relative half-width they aim for.

    Attributes:
        spend_units: each query's spend, in ledger units; they add up to the total.
        relative_half_width: the common half-width / expected value the split aims for
            (before rounding the spends to units and the half-widths to integers).
    """

    spend_units: tuple[int, ...]
    relative_half_width: float


def scale_exponent(accounting: Accounting | str) -> float:
    """p in half-width = c / spend**p: 1 for pure DP (epsilon), 1/2 for zCDP (rho)."""
    return 1.0 if str(accounting) == str(Accounting.PURE_DP) else 0.5


def split_total(
    total_units: int,
    half_widths: Sequence[float],
    spend_units: Sequence[int],
    expected_values: Sequence[float],
    accounting: Accounting | str,
) -> Split:
    """Split `total_units` so every query's half-width is the same fraction of its value.

    Args:
        total_units: the total to split, in ledger units (positive).
        half_widths: each query's interval half-width at `spend_units` (positive).
        spend_units: the spend each half-width was computed at (positive).
        expected_values: the value expected in a typical cell of each query (positive).
        accounting: pure DP or zCDP (one for all queries).

    Raises:
        ValueError: empty or mismatched inputs, or a non-positive value.
    """
    count = len(half_widths)
    if count == 0 or len(spend_units) != count or len(expected_values) != count:
        raise ValueError("one half-width, spend and expected value per query")
    if total_units <= 0 or min(spend_units) <= 0:
        raise ValueError("spends must be positive")
    if not all(math.isfinite(v) and v > 0 for v in [*half_widths, *expected_values]):
        raise ValueError("half-widths and expected values must be positive and finite")
    p = scale_exponent(accounting)
    weights = [
        (width * spent**p / expected) ** (1 / p)
        for width, spent, expected in zip(half_widths, spend_units, expected_values, strict=True)
    ]
    total_weight = math.fsum(weights)
    shares = [total_units * weight / total_weight for weight in weights]
    units = [math.floor(share) for share in shares]
    left = total_units - sum(units)
    by_remainder = sorted(range(count), key=lambda i: shares[i] - units[i], reverse=True)
    for i in by_remainder[:left]:
        units[i] += 1
    return Split(tuple(units), (total_weight / total_units) ** p)

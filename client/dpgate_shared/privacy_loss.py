"""A zCDP spend in plain terms: the (epsilon, delta) guarantee that a rho implies.

Budgets under zCDP are kept, composed and charged in rho (rho adds up exactly). People
know (epsilon, delta) better, so every rho dpgate shows comes with the epsilon it implies
at a fixed delta (`DEFAULT_DELTA`, one in a million). The conversion is post-processing of
a number: it spends nothing, and the ledger never charges or compares in epsilon.

The conversion is the tight one OpenDP uses (`opendp.combinators.make_zCDP_to_approxDP`,
from Canonne, Kamath and Steinke 2020, "The Discrete Gaussian for Differential Privacy",
Proposition 12 with its optimal order alpha): rho-zCDP implies (epsilon, delta)-DP with

    delta(epsilon) = min over alpha > 1 of
        exp((alpha - 1) (alpha rho - epsilon)) / (alpha - 1) * (1 - 1/alpha)^alpha

and the epsilon shown is the smallest one whose delta is at most the target (found by
bisection and rounded up, so it never understates the loss). It is never larger than the
textbook bound epsilon = rho + 2 sqrt(rho ln(1/delta)) (Bun and Steinke 2016), which is
kept as `textbook_epsilon` for comparison. The client installs without OpenDP, so this
is plain Python; a server-side test checks it against OpenDP's own map.

Example:
    >>> round(zcdp_epsilon(0.5), 4)
    5.2215
    >>> round(textbook_epsilon(0.5), 4)
    5.7565
    >>> in_plain_terms(Decimal("0.5"), "zcdp")
    'rho 0.5 (epsilon 5.23 at delta 0.000001)'
    >>> in_plain_terms(Decimal("0.5"), "pure_dp")
    'epsilon 0.5'
"""

from __future__ import annotations

import math
from decimal import Decimal

from dpgate_shared.units import measure_of, plain

DEFAULT_DELTA = 1e-6
"""The delta at which a rho is shown as an epsilon: one in a million."""

DELTA_IN_WORDS = "0.000001"
"""`DEFAULT_DELTA` as people read it (never in scientific notation)."""

_SMALLEST_ORDER = 1.01
"""The least Renyi order searched: below it the bound is numerically unstable (and only
matters when epsilon is about rho, where delta is large anyway), as in OpenDP."""
_RELATIVE_TOLERANCE = 1e-12
_SHOWN_DIGITS = 3


def zcdp_delta(rho: float, epsilon: float) -> float:
    """The least delta such that rho-zCDP implies (epsilon, delta)-DP (at most 1).

    Raises:
        ValueError: a negative or NaN rho or epsilon.
    """
    _check_non_negative(rho, "rho")
    _check_non_negative(epsilon, "epsilon")
    if rho == 0 or math.isinf(epsilon):
        return 0.0
    if math.isinf(rho):
        return 1.0
    # The bound is convex in alpha on this range: bisect on the sign of its derivative,
    # (2 alpha - 1) rho - epsilon + ln(1 - 1/alpha). Any alpha > 1 gives a valid delta, so
    # an inexact search only makes delta larger (still true), never smaller.
    low, high = _SMALLEST_ORDER, (epsilon + 1.0) / (2.0 * rho) + 2.0
    while True:
        middle = low + (high - low) / 2.0
        if middle in (low, high):
            break
        slope = (2.0 * middle - 1.0) * rho - epsilon + math.log1p(-1.0 / middle)
        if slope < 0:
            low = middle
        else:
            high = middle
    alpha = high
    exponent = (alpha - 1.0) * (alpha * rho - epsilon) + alpha * math.log1p(-1.0 / alpha)
    if exponent > math.log(alpha - 1.0):  # delta would exceed 1 (or overflow)
        return 1.0
    return min(1.0, math.exp(exponent) / (alpha - 1.0))


def textbook_epsilon(rho: float, delta: float = DEFAULT_DELTA) -> float:
    """rho + 2 sqrt(rho ln(1/delta)): the simple bound, looser than `zcdp_epsilon`."""
    _check_non_negative(rho, "rho")
    _check_delta(delta)
    return rho + 2.0 * math.sqrt(rho * math.log(1.0 / delta))


def zcdp_epsilon(rho: float, delta: float = DEFAULT_DELTA) -> float:
    """The least epsilon such that rho-zCDP implies (epsilon, delta)-DP (not understated).

    Raises:
        ValueError: a negative or NaN rho, or a delta outside (0, 1).
    """
    _check_non_negative(rho, "rho")
    _check_delta(delta)
    if rho == 0:
        return 0.0
    if math.isinf(rho):
        return math.inf
    if zcdp_delta(rho, 0.0) <= delta:
        return 0.0
    low, high = 0.0, textbook_epsilon(rho, delta)
    while zcdp_delta(rho, high) > delta:  # the textbook bound holds; this is a safeguard
        low, high = high, 2.0 * high + 1.0
    # Invariant: zcdp_delta(rho, high) <= delta; high is returned, so never understated.
    while high - low > _RELATIVE_TOLERANCE * high:
        middle = low + (high - low) / 2.0
        if middle in (low, high):
            break
        if zcdp_delta(rho, middle) <= delta:
            high = middle
        else:
            low = middle
    return high


def epsilon_equivalent(
    amount: Decimal | float, accounting: str, delta: float = DEFAULT_DELTA
) -> float | None:
    """The epsilon an amount amounts to at `delta`: for zCDP its conversion; None for a
    pure-DP amount (it is an epsilon already, with delta 0) or an unknown accounting."""
    if accounting != "zcdp":
        return None
    return zcdp_epsilon(float(amount), delta)


def in_plain_terms(amount: Decimal, accounting: str, delta: float = DEFAULT_DELTA) -> str:
    """An amount for people, a rho with its (epsilon, delta) equivalent beside it.

    Note that the equivalents of two rhos do not add up: add the rhos, then convert.
    """
    words = f"{measure_of(accounting)} {plain(amount)}"
    epsilon = epsilon_equivalent(amount, accounting, delta)
    if epsilon is None:
        return words
    return f"{words} (epsilon {shown_epsilon(epsilon)} at delta {delta_in_words(delta)})"


def shown_epsilon(epsilon: float) -> str:
    """`epsilon` to three significant digits, rounded up (a loss is never shown smaller).

    Example:
        >>> shown_epsilon(5.22153), shown_epsilon(0.0123401), shown_epsilon(1234.5)
        ('5.23', '0.0124', '1,235')
    """
    if not math.isfinite(epsilon):
        return "unbounded"
    if epsilon <= 0:
        return "0"
    places = max(0, _SHOWN_DIGITS - 1 - math.floor(math.log10(epsilon)))
    step = Decimal(1).scaleb(-places)
    rounded = (Decimal(repr(epsilon)) / step).to_integral_value(rounding="ROUND_CEILING") * step
    return f"{rounded:,.{places}f}"


def delta_in_words(delta: float) -> str:
    """A delta as a plain decimal ("0.000001"), never in scientific notation."""
    return DELTA_IN_WORDS if delta == DEFAULT_DELTA else plain(Decimal(repr(delta)))


def _check_non_negative(value: float, what: str) -> None:
    if math.isnan(value) or value < 0:
        raise ValueError(f"{what} must be a non-negative number, got {value!r}")


def _check_delta(delta: float) -> None:
    if not 0 < delta < 1:
        raise ValueError(f"delta must be strictly between 0 and 1, got {delta!r}")

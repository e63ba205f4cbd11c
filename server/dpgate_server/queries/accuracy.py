"""Confidence intervals from the exact distribution of dpgate's integer noise.

OpenDP adds *integer* Laplace noise, P(X = x) proportional to exp(-|x| / b), or integer
Gaussian noise, proportional to exp(-x^2 / (2 sigma^2)). The true value is an integer too,
so the interval `value +/- t` covers it exactly when |X| <= t. The half-width reported
is the smallest integer t with P(|X| <= t) >= the confidence level: exact, not the
continuous approximation (which is slightly too narrow), and one step tighter than
`opendp.accuracy.discrete_gaussian_scale_to_accuracy`, whose t bounds P(|X| >= t).

Intervals depend only on the mechanism and its scale, never on the data, so an interval
at another level is free post-processing of a stored release (`with_confidence_level`).
"""

from __future__ import annotations

import dataclasses
import math
from statistics import NormalDist

import numpy as np

from dpgate_server.queries import cell_table
from dpgate_server.queries.errors import InvalidQuery
from dpgate_server.queries.model import Mechanism, Release
from dpgate_server.vocabulary.errors import ErrorReason
from dpgate_shared.confidence import check_confidence_level

_EXACT_GAUSSIAN_MAX_SIGMA = 1_000.0
"""Up to this sigma the Gaussian tail is summed term by term; above, Euler-Maclaurin."""
_GAUSSIAN_SPAN = 40.0
"""Terms beyond 40 sigma weigh below exp(-800): zero in double precision."""
_SCALE_SEARCH = (1e-9, 1e15)
"""Range searched for the largest scale meeting a half-width."""


def tail_probability(mechanism: Mechanism, scale: float, half_width: int) -> float:
    """P(|X| > half_width) for the mechanism's noise X at `scale`."""
    if half_width < 0:
        return 1.0
    if mechanism is Mechanism.DISCRETE_LAPLACE:
        return _laplace_tail(scale, half_width)
    return _gaussian_tail(scale, half_width)


def coverage(mechanism: Mechanism, scale: float, half_width: int) -> float:
    """Exact probability that `value +/- half_width` covers the true value."""
    return 1.0 - tail_probability(mechanism, scale, half_width)


def half_width(mechanism: Mechanism, scale: float, confidence_level: float) -> int:
    """Smallest integer t with P(|X| <= t) >= confidence_level."""
    alpha = 1.0 - confidence_level
    guess = _continuous_guess(mechanism, scale, confidence_level)
    t = max(0, guess)
    while tail_probability(mechanism, scale, t) > alpha:
        t += 1
    while t > 0 and tail_probability(mechanism, scale, t - 1) <= alpha:
        t -= 1
    return t


def largest_scale_for_half_width(
    mechanism: Mechanism, target_half_width: float, confidence_level: float
) -> float:
    """The largest noise scale whose interval at `confidence_level` is within the target.

    The interval's half-width is an integer, so the target is floored first; the tail
    probability grows with the scale, so a bisection on log(scale) finds the boundary.
    Returns a scale at which the half-width is <= the target (just inside the boundary).
    """
    t = math.floor(target_half_width)
    alpha = 1.0 - confidence_level
    low, high = _SCALE_SEARCH
    if tail_probability(mechanism, low, t) > alpha:
        return 0.0  # unreachable: even (almost) no noise misses the target
    if tail_probability(mechanism, high, t) <= alpha:
        return high
    for _ in range(200):
        middle = math.sqrt(low * high)
        if tail_probability(mechanism, middle, t) <= alpha:
            low = middle
        else:
            high = middle
        if high / low - 1.0 < 1e-12:
            break
    return low


def checked_confidence_level(level: object) -> float:
    """`level` as a float in (0, 1), by the rule the client applies too.

    Raises:
        InvalidQuery: BAD_CONFIDENCE, saying what to write instead.
    """
    try:
        return check_confidence_level(level)
    except ValueError as exc:
        raise InvalidQuery(ErrorReason.BAD_CONFIDENCE, "confidence_level", str(exc)) from None


def with_confidence_level(release: Release, confidence_level: float) -> Release:
    """The same release with intervals at another level (post-processing: free).

    Raises InvalidQuery(BAD_CONFIDENCE) for a level outside (0, 1).
    """
    level = checked_confidence_level(confidence_level)
    width = half_width(release.mechanism, release.noise_scale, level)
    table = cell_table.encode(cell_table.with_half_width(release.frame(), width))
    return dataclasses.replace(release, table=table, confidence_level=level, half_width=width)


def _laplace_tail(scale: float, t: int) -> float:
    # P(|X| > t) = 2 q^(t+1) / (1 + q), q = exp(-1/b), computed in logs for large t / b.
    if scale <= 0:
        return 0.0
    log_tail = math.log(2.0) - (t + 1) / scale - math.log1p(math.exp(-1.0 / scale))
    return min(1.0, math.exp(log_tail))


def _gaussian_tail(sigma: float, t: int) -> float:
    if sigma <= 0:
        return 0.0
    if sigma <= _EXACT_GAUSSIAN_MAX_SIGMA:
        span = math.ceil(_GAUSSIAN_SPAN * sigma) + 2
        if t >= span:
            return 0.0
        x = np.arange(0, span + t + 2, dtype=np.float64)
        weights = np.exp(-(x * x) / (2.0 * sigma * sigma))
        total = weights[0] + 2.0 * float(np.sum(weights[:0:-1]))  # small terms first
        tail = 2.0 * float(np.sum(weights[:t:-1]))
        return float(min(1.0, tail / total))
    # Euler-Maclaurin for the sum from t+1 to infinity; the normaliser is sigma*sqrt(2 pi)
    # up to exp(-2 pi^2 sigma^2) (Poisson summation), i.e. exactly in double precision.
    a = float(t + 1)
    s2 = sigma * sigma
    f = math.exp(-(a * a) / (2.0 * s2))
    integral = sigma * math.sqrt(math.pi / 2.0) * math.erfc(a / (sigma * math.sqrt(2.0)))
    first = a / (12.0 * s2) * f
    third = (-(a**3) / s2**3 + 3.0 * a / s2**2) * f / 720.0
    tail_sum = integral + f / 2.0 + first + third
    return min(1.0, 2.0 * tail_sum / (sigma * math.sqrt(2.0 * math.pi)))


def _continuous_guess(mechanism: Mechanism, scale: float, confidence_level: float) -> int:
    """A starting point within a step or two of the exact half-width."""
    if scale <= 0:
        return 0
    if mechanism is Mechanism.DISCRETE_LAPLACE:
        return math.floor(scale * math.log(1.0 / (1.0 - confidence_level)))
    return math.floor(scale * NormalDist().inv_cdf((1.0 + confidence_level) / 2.0))

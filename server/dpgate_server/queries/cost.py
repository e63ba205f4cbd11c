"""What a query costs, computed by dpgate itself and cross-checked against OpenDP.

Each release adds integer noise of scale `s` to aggregates that one patient can move by at
most `bound * sensitivity` (k rows, each moving a cell by at most 1 for COUNT or by
max(|low|, |high|) for a clamped SUM). So the cost is

    epsilon = bound * sensitivity / s                  (pure DP, Laplace)
    rho     = (bound * sensitivity)^2 / (2 * s^2)      (zCDP, Gaussian)

With verified per-period bounds (store/period_bounds.py) the bound is a PatientChange: its
L1 `l1` for pure DP and its squared L2 `l2_squared` for zCDP (a count by week is moved by
at most min(K, k * sqrt(min(g, K))) in L2), so rho = l2_squared * sensitivity^2 / (2 s^2).

computed exactly (Fractions of the float scale OpenDP really uses) and rounded *up* to
ledger units. OpenDP's own `map(d_in)` must not exceed it: OpenDP has open bugs that
understate a plan's cost, and dpgate's formula has none of the plan's freedom, so when
OpenDP says more the query is refused and logged (`cross_check`).

The scale for a requested spend has a closed form; float rounding can land it one step
over the spend, so it is nudged up until the exact cost fits (`calibrate`, cached per
query shape: accounting, bound, sensitivity and spend).
"""

from __future__ import annotations

import functools
import logging
import math
from dataclasses import dataclass
from fractions import Fraction

from dpgate_server.queries.errors import CostMismatchError
from dpgate_server.queries.model import Mechanism
from dpgate_server.spend import UNITS_PER_WHOLE, plain, to_units_ceil, units_to_decimal
from dpgate_server.store.period_bounds import PatientChange
from dpgate_server.vocabulary.accounting import Accounting

logger = logging.getLogger(__name__)

_NUDGE = 1e-12
"""Relative amount the closed-form scale is raised by, so OpenDP's rounded-up figure fits."""


@dataclass(frozen=True, slots=True)
class Calibration:
    """The noise for one query shape and what it costs.

    Attributes:
        accounting: pure DP or zCDP.
        mechanism: integer Laplace (pure DP) or integer Gaussian (zCDP).
        bound: rows per patient the release is charged for (k), or the patient's L1 and
            squared L2 change under per-period bounds.
        sensitivity: how far one row moves one cell (1, or the SUM clamp's magnitude).
        global_scale: OpenDP's `global_scale` argument (scale per unit of sensitivity).
        noise_scale: the noise scale OpenDP applies, `global_scale * sensitivity`.
        cost_units: dpgate's cost at that scale, in nano units, rounded up.
    """

    accounting: Accounting
    mechanism: Mechanism
    bound: int | PatientChange
    sensitivity: int
    global_scale: float
    noise_scale: float
    cost_units: int


def mechanism_for(accounting: Accounting) -> Mechanism:
    """Pure DP uses integer Laplace noise; zCDP uses integer Gaussian noise."""
    if accounting is Accounting.PURE_DP:
        return Mechanism.DISCRETE_LAPLACE
    return Mechanism.DISCRETE_GAUSSIAN


def as_change(bound: int | PatientChange) -> PatientChange:
    """A row bound k as the change of k rows in one cell (l1 = k, l2 = k)."""
    return bound if isinstance(bound, PatientChange) else PatientChange.rows(bound)


def exact_cost(
    accounting: Accounting, bound: int | PatientChange, sensitivity: int, noise_scale: float
) -> Fraction:
    """The exact epsilon or rho of noise at `noise_scale` on a bound*sensitivity change."""
    change = as_change(bound)
    if (
        change.l1 < 1
        or change.l2_squared < 1
        or sensitivity < 1
        or not (math.isfinite(noise_scale) and noise_scale > 0)
    ):
        raise ValueError("bound, sensitivity and scale must be positive and finite")
    scale = Fraction(noise_scale)
    if accounting is Accounting.PURE_DP:
        return Fraction(change.l1 * sensitivity) / scale
    return Fraction(change.l2_squared * sensitivity * sensitivity) / (2 * scale * scale)


def cost_units(
    accounting: Accounting, bound: int | PatientChange, sensitivity: int, noise_scale: float
) -> int:
    """`exact_cost` in ledger units, rounded up (never charge less than it costs)."""
    return to_units_ceil(exact_cost(accounting, bound, sensitivity, noise_scale))


@functools.lru_cache(maxsize=4096)
def calibrate(
    accounting: Accounting, bound: int | PatientChange, sensitivity: int, spend_units: int
) -> Calibration:
    """The smallest noise (to ~1e-12) whose exact cost is at most `spend_units`."""
    if spend_units < 1:
        raise ValueError("spend_units must be at least 1")
    target = Fraction(spend_units, UNITS_PER_WHOLE)
    change = as_change(bound)
    if accounting is Accounting.PURE_DP:
        global_scale = float(Fraction(change.l1) / target)
    else:
        global_scale = math.sqrt(change.l2_squared / (2.0 * float(target)))
    global_scale *= 1.0 + _NUDGE
    while True:
        noise_scale = global_scale * sensitivity
        units = cost_units(accounting, bound, sensitivity, noise_scale)
        if units <= spend_units:
            break
        global_scale = math.nextafter(global_scale, math.inf)
    return Calibration(
        accounting=accounting,
        mechanism=mechanism_for(accounting),
        bound=bound,
        sensitivity=sensitivity,
        global_scale=global_scale,
        noise_scale=noise_scale,
        cost_units=units,
    )


def spend_for_noise_scale(
    accounting: Accounting, bound: int | PatientChange, sensitivity: int, noise_scale: float
) -> int:
    """Units of the smallest spend whose calibrated noise is at most `noise_scale`."""
    return max(1, cost_units(accounting, bound, sensitivity, noise_scale))


def cross_check(dpgate_units: int, opendp_cost: float, opendp_check: bool, detail: str) -> None:
    """Refuse (and log) when OpenDP's figure for the plan exceeds dpgate's charge.

    Args:
        dpgate_units: what dpgate will charge.
        opendp_cost: the measurement's `map(d_in)`.
        opendp_check: the measurement's `check(d_in, charge)`: OpenDP agrees the plan
            is private at dpgate's charge.
        detail: the query shape, for the log.
    """
    opendp_units = to_units_ceil(opendp_cost) if math.isfinite(opendp_cost) else -1
    if opendp_units < 0 or opendp_units > dpgate_units or not opendp_check:
        logger.error(
            "cost disagreement, query refused: dpgate charges %s, OpenDP %r (check %s): %s",
            plain(units_to_decimal(dpgate_units)),
            opendp_cost,
            opendp_check,
            detail,
        )
        raise CostMismatchError(dpgate_units, opendp_units, detail)

"""Noisy counts of patients released once at publish (the bias figure), by OpenDP.

A publish may release a few counts of patients, each of which one patient moves by at most
1 (say, how many patients lost rows to each contribution bound). `noisy_patient_counts`
adds noise to all of them in one OpenDP measurement over the vector of counts, calibrated
to a declared spend:

- pure DP: integer Laplace on the vector, L1 sensitivity n (n counts, 1 each), so the cost
  is epsilon = n / scale;
- zCDP: integer Gaussian, L2 sensitivity sqrt(n), rho = n / (2 scale^2).

The scale comes from `cost.calibrate` (the same closed form and nudge as a query's), and
OpenDP's own `map(d_in)` is cross-checked against the declared spend before any noise is
drawn (`cost.cross_check`): a disagreement refuses the release. The noise is drawn by the
measurement, never outside OpenDP. Every count's interval is `value +/- half_width`, the
exact half-width of one draw at the confidence level (`accuracy.half_width`); intervals at
another level are free post-processing of the stored scale.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from opendp.domains import atom_domain, vector_domain
from opendp.measurements import make_gaussian, make_laplace
from opendp.metrics import l1_distance, l2_distance
from opendp.mod import enable_features

from dpgate_server.queries import accuracy, cost
from dpgate_server.queries.model import Mechanism
from dpgate_server.queries.process_settings import OPENDP_FEATURES
from dpgate_server.spend import units_to_float
from dpgate_server.store.period_bounds import PatientChange
from dpgate_server.vocabulary.accounting import Accounting


@dataclass(frozen=True, slots=True)
class NoisyCounts:
    """Counts released with noise, their interval half-width and what they cost.

    Attributes:
        values: the noisy counts, in the order given (unbiased, never clamped at zero).
        mechanism: integer Laplace (pure DP) or integer Gaussian (zCDP).
        noise_scale: the scale of every count's noise.
        confidence_level: the level `half_width` is stated at.
        half_width: `value +/- half_width` covers the true count with probability at least
            `confidence_level` (exact for the integer noise).
        cost_units: the spend, in ledger units: at most the declared one.
    """

    values: tuple[int, ...]
    mechanism: Mechanism
    noise_scale: float
    confidence_level: float
    half_width: int
    cost_units: int


def noisy_patient_counts(
    exact: Sequence[int],
    accounting: Accounting,
    spend_units: int,
    confidence_level: float = 0.95,
) -> NoisyCounts:
    """Release `exact` (counts of patients, each moved by at most 1 by one patient) with
    noise costing at most `spend_units` in all.

    Raises:
        ValueError: no counts, a negative count or a spend below one unit.
        CostMismatchError: OpenDP's cost of the measurement exceeds the spend.
    """
    counts = [int(c) for c in exact]
    if not counts:
        raise ValueError("at least one count is released")
    if any(c < 0 for c in counts):
        raise ValueError("a count of patients is never negative")
    enable_features(*OPENDP_FEATURES)
    n = len(counts)
    calibration = cost.calibrate(accounting, PatientChange(l1=n, l2_squared=n), 1, spend_units)
    scale = calibration.noise_scale
    domain = vector_domain(atom_domain(T=int))
    measurement: Any  # OpenDP's measurements are untyped
    if accounting is Accounting.PURE_DP:
        measurement = make_laplace(domain, l1_distance(T=int), scale)
        d_in: float = n
    else:
        measurement = make_gaussian(domain, l2_distance(T=float), scale)
        d_in = math.sqrt(n)
    cost.cross_check(
        calibration.cost_units,
        float(measurement.map(d_in)),
        bool(measurement.check(d_in, units_to_float(calibration.cost_units))),
        f"{n} publish-time patient count(s), sensitivity 1 each, {accounting.value}",
    )
    values = tuple(int(v) for v in measurement(counts))
    mechanism = cost.mechanism_for(accounting)
    return NoisyCounts(
        values=values,
        mechanism=mechanism,
        noise_scale=scale,
        confidence_level=confidence_level,
        half_width=accuracy.half_width(mechanism, scale, confidence_level),
        cost_units=calibration.cost_units,
    )

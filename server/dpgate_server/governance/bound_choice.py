"""Contribution bounds chosen privately: a DP quantile of rows per patient (issue 18 item 2).

A bound is policy or chosen by a DP mechanism, never an observed maximum: the largest
number of rows any patient has is a fact about one patient, and a bound set to it would
publish that fact. Here an administrator may have the total bound K (`max_contributions`),
and for a period the dataset bounds, the rows per patient in one period k (`week.rows`) and
the periods per patient g (`week.periods`), chosen as the `level` quantile of the matching
per-patient quantity (0.99: about 99% of patients keep all their rows under that bound):

| bound              | per-patient quantity                       |
|--------------------|--------------------------------------------|
| `max_contributions`| the patient's rows                         |
| `<period>.rows`    | the patient's most rows in any one period  |
| `<period>.periods` | the distinct periods the patient has rows in |

Each choice is OpenDP's own quantile mechanism, `make_private_quantile` (opendp 0.16:
candidate scores |(1 - a) #(x < c) - a #(x > c)| from `make_quantile_score_candidates`,
then `make_noisy_max` selecting the lowest: permute-and-flip under pure DP, the exponential
mechanism under zCDP), over a vector holding one value per patient, with the public
candidates 1..max (so a chosen bound is never below 1 nor above the candidate maximum) and
the vector's size unknown (the patient count is private). Adding or removing one patient
adds or removes one value of each vector (symmetric distance 1), so each choice costs
OpenDP's `map(1)`: epsilon = 2 max(a, 1 - a) / scale, or rho = epsilon^2 / 8. The declared
spend is shared evenly between the bounds chosen; each one's scale is the smallest whose
cost fits its share, so the choice costs the sum of their maps (sequential composition),
never more than declared (a publish charges the dataset's cap the declared spend,
governance/publishing.py).

The values reach OpenDP as histograms: for each quantity, how many patients have each value
0..max+1, every value above the largest candidate counted at max+1. That changes no score
(a value above every candidate is above each of them whatever it is), so the mechanism's
output has the same distribution as on the raw values, and the histograms are built out of
core: from a publish's patient bucket files (every row of a patient in one bucket, so a
patient registered at two practices is counted once, with all their rows), or from any
LazyFrame of rows. Only the vector handed to OpenDP holds one value per patient (4 bytes
each, twice while OpenDP copies it).

Example:
    >>> import polars as pl
    >>> from dpgate_server.vocabulary.accounting import Accounting
    >>> rows = pl.LazyFrame({"patient_key": [1] * 3 + [2] * 5 + list(range(3, 1000))})
    >>> histograms = patient_histograms(rows, ("max_contributions",), max_candidate=10)
    >>> settings = BoundChoiceSettings(("max_contributions",), 0.99, 1_000_000_000, 10)
    >>> choice = choose_bounds(histograms, settings, Accounting.PURE_DP)
    >>> 1 <= choice.value("max_contributions") <= 10, choice.spend_units <= 1_000_000_000
    (True, True)
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl
from opendp.domains import atom_domain, vector_domain
from opendp.measurements import make_private_quantile
from opendp.measures import max_divergence, zero_concentrated_divergence
from opendp.metrics import symmetric_distance
from opendp.mod import enable_features

from dpgate_server.governance.patient_buckets import PERIOD_FIELDS, BucketFiles
from dpgate_server.spend import UNITS_PER_WHOLE, to_units_ceil
from dpgate_server.store.chosen_bounds import (
    BOUND_NAMES,
    PERIODS_SUFFIX,
    ROWS_SUFFIX,
    TOTAL,
    BoundChoice,
    ChosenBound,
)
from dpgate_server.store.period_bounds import PERIOD_COLUMNS, PeriodBounds
from dpgate_server.vocabulary.accounting import Accounting

__all__ = [
    "BOUND_NAMES",
    "TOTAL",
    "BoundChoice",
    "BoundChoicePolicy",
    "BoundChoiceSettings",
    "ChosenBound",
    "bucket_frames",
    "calibrate_scale",
    "check_choosable",
    "choose_bounds",
    "histogram",
    "patient_histograms",
    "patient_values",
    "patient_vector",
    "quantile_measurement",
]

PATIENT = "patient_key"
MAX_CANDIDATE_LIMIT = 100_000
"""Largest candidate maximum accepted (each draw walks every candidate)."""
LEVEL_STEP = Decimal("0.0001")
"""OpenDP scores a quantile level in steps of 1/10,000 (score_candidates_constants with an
unknown size): a finer level would be rounded silently, so it is refused."""
_VALUE = np.uint32
_VALUE_TYPE = "u32"


@dataclass(frozen=True, slots=True)
class BoundChoiceSettings:
    """What an administrator asks for (refused at construction if unusable).

    Attributes:
        bounds: the bounds to choose, from BOUND_NAMES (e.g. ("max_contributions",
            "week.rows", "week.periods")).
        level: the quantile level, strictly between 0 and 1, in steps of 0.0001 (0.99: about
            99% of patients keep all their rows under each chosen bound).
        spend_units: the declared spend in nano units (epsilon for a pure-DP dataset, rho
            for zCDP), shared evenly between the bounds; the charge never exceeds it.
        max_candidate: the candidates are 1..max_candidate (public; a `.periods` bound's
            also stop at the number of periods the dataset has).
    """

    bounds: tuple[str, ...]
    level: float
    spend_units: int
    max_candidate: int

    def __post_init__(self) -> None:
        if not self.bounds:
            raise ValueError("name at least one bound to choose, from " + ", ".join(BOUND_NAMES))
        unknown = [name for name in self.bounds if name not in BOUND_NAMES]
        if unknown:
            raise ValueError(
                f"unknown bound(s) {', '.join(map(repr, unknown))}: a chosen bound is one of "
                + ", ".join(BOUND_NAMES)
            )
        if len(set(self.bounds)) != len(self.bounds):
            raise ValueError("each bound may be named once")
        _check_level(self.level)
        if isinstance(self.spend_units, bool) or not isinstance(self.spend_units, int):
            raise ValueError("the spend must be a whole number of nano units")
        if self.spend_units < len(self.bounds):
            raise ValueError(
                "the spend for choosing bounds must be positive (at least 0.000000001 for "
                f"each of the {len(self.bounds)} bound(s))"
            )
        if (
            isinstance(self.max_candidate, bool)
            or not isinstance(self.max_candidate, int)
            or not 1 <= self.max_candidate <= MAX_CANDIDATE_LIMIT
        ):
            raise ValueError(
                f"the largest candidate bound must be a whole number from 1 to "
                f"{MAX_CANDIDATE_LIMIT:,}, not {self.max_candidate!r}"
            )

    @property
    def periods(self) -> tuple[str, ...]:
        """The period columns whose per-patient quantities are needed."""
        return tuple(p for p in PERIOD_COLUMNS if any(_period_of(n) == p for n in self.bounds))

    def share_units(self) -> int:
        """Each bound's share of the declared spend (the remainder of the division unused)."""
        return self.spend_units // len(self.bounds)


@dataclass(frozen=True, slots=True)
class BoundChoicePolicy:
    """An administrator's settings for choosing a dataset's bounds at publish (config
    `publishing.chosen_bounds.<dataset>`).

    Attributes:
        bounds: the bounds every publish chooses (empty: none unless a publish asks).
        level: the quantile level.
        epsilon_units: the declared spend on a pure-DP dataset, for all the bounds together.
        rho_units: the declared spend on a zCDP dataset.
        max_candidate: the largest candidate bound.
        max_per_version: how many times one version may be charged for a choice.
    """

    bounds: tuple[str, ...] = (TOTAL,)
    level: float = 0.99
    epsilon_units: int = 100_000_000
    rho_units: int = 1_250_000  # epsilon 0.1 of noise (epsilon^2 / 8), as the config default
    max_candidate: int = 200
    max_per_version: int = 1

    def __post_init__(self) -> None:
        if self.bounds:
            self.settings(Accounting.PURE_DP)
            self.settings(Accounting.ZCDP)
        if self.max_per_version < 1:
            raise ValueError("a version may be charged for a choice at least once")

    def settings(
        self, accounting: Accounting, bounds: tuple[str, ...] | None = None
    ) -> BoundChoiceSettings:
        """The settings for a dataset of this accounting (`bounds` in place of the
        policy's, for one publish)."""
        units = self.epsilon_units if accounting is Accounting.PURE_DP else self.rho_units
        return BoundChoiceSettings(
            self.bounds if bounds is None else bounds, self.level, units, self.max_candidate
        )


def check_choosable(bounds: Sequence[str], policy: PeriodBounds) -> None:
    """Refuse to choose a period's bound when the policy declares no cap on that period:
    the publish files period codes only for a declared period, and a choice the cap cannot
    pay falls back to the policy."""
    for name in bounds:
        period = _period_of(name)
        if period is not None and policy.cap(period) is None:
            raise ValueError(
                f"{name} can be chosen only for a dataset with a {period} bound: declare one "
                f"in publishing.period_bounds (its values apply when the choice is not paid for)"
            )


# the per-patient quantities


def patient_values(rows: pl.LazyFrame, periods: Sequence[str] = ()) -> pl.LazyFrame:
    """One row per patient of `rows` (columns patient_key and each of `periods`): its row
    count (`max_contributions`) and, per period, `<period>.rows` and `<period>.periods`."""
    out = rows.group_by(PATIENT).agg(pl.len().alias(TOTAL))
    for period in periods:
        per = (
            rows.group_by(PATIENT, period)
            .agg(pl.len().alias("__rows"))
            .group_by(PATIENT)
            .agg(
                pl.col("__rows").max().alias(period + ROWS_SUFFIX),
                pl.len().alias(period + PERIODS_SUFFIX),
            )
        )
        out = out.join(per, on=PATIENT, how="inner")
    return out


def histogram(values: npt.ArrayLike, max_candidate: int) -> npt.NDArray[np.int64]:
    """How many patients have each value 0..max_candidate + 1 (values above the largest
    candidate counted at max_candidate + 1)."""
    array = np.asarray(values, dtype=np.int64)
    if array.size and array.min() < 0:
        raise ValueError("a per-patient count cannot be negative")
    clipped = np.minimum(array, max_candidate + 1)
    return np.bincount(clipped, minlength=max_candidate + 2).astype(np.int64)


def patient_histograms(
    rows: pl.LazyFrame | Iterable[pl.DataFrame],
    bounds: Sequence[str],
    max_candidate: int,
) -> dict[str, npt.NDArray[np.int64]]:
    """The histogram of each bound's per-patient quantity over `rows`.

    `rows` is a LazyFrame holding every row (columns patient_key and the periods named), or
    an iterable of DataFrames each holding *all* the rows of the patients it mentions (a
    publish's buckets: `bucket_frames`), so memory is one part at a time."""
    periods = tuple(p for p in PERIOD_COLUMNS if any(_period_of(n) == p for n in bounds))
    parts = [rows] if isinstance(rows, pl.LazyFrame) else (f.lazy() for f in rows)
    out = {name: np.zeros(max_candidate + 2, dtype=np.int64) for name in bounds}
    for part in parts:
        values = patient_values(part, periods).select(list(bounds)).collect(engine="streaming")
        for name in bounds:
            out[name] += histogram(values.get_column(name).to_numpy(), max_candidate)
    return out


def bucket_frames(buckets: BucketFiles) -> Iterable[pl.DataFrame]:
    """Each bucket's rows (patient_key, and practice, week and month codes for period
    bucket files), one bucket at a time; the files are left in place for the cut."""
    for bucket in range(buckets.buckets):
        if buckets.with_periods:
            rows = buckets.read_rows(bucket)
            yield pl.DataFrame(
                {PATIENT: rows["patient_key"], **{name: rows[name] for name in PERIOD_FIELDS}}
            )
        else:
            patient, _ = buckets.read(bucket)
            yield pl.DataFrame({PATIENT: patient})


# the mechanism


def quantile_measurement(
    accounting: Accounting, level: float, max_candidate: int, scale: float
) -> Any:
    """OpenDP's quantile over one value per patient: candidates 1..max_candidate, size
    unknown, symmetric distance (one patient adds or removes one value)."""
    enable_features("contrib")  # OpenDP's quantile is "contrib" in 0.16 (idempotent)
    measure = (
        max_divergence() if accounting is Accounting.PURE_DP else zero_concentrated_divergence()
    )
    return make_private_quantile(
        vector_domain(atom_domain(T=_VALUE_TYPE)),
        symmetric_distance(),
        measure,
        list(range(1, max_candidate + 1)),
        level,
        scale,
    )


def calibrate_scale(
    accounting: Accounting, level: float, max_candidate: int, share_units: int
) -> tuple[float, int]:
    """The scale whose cost (OpenDP's map, rounded up to nano units) fits `share_units`,
    within a few parts in 10^12 of the smallest; returns it and that cost.

    First principles give the scale: the score of one candidate moves by at most
    max(a, 1 - a) patients when one patient comes or goes (its range by twice that), so
    epsilon = 2 max(a, 1 - a) / scale and rho = epsilon^2 / 8 (OpenDP's map agrees, as the
    tests check). It is then widened until OpenDP's own map fits the share: the map alone
    decides what is charged.
    """
    _, scale, cost = _calibrated(accounting, level, max_candidate, share_units)
    return scale, cost


def _calibrated(
    accounting: Accounting, level: float, max_candidate: int, share_units: int
) -> tuple[Any, float, int]:
    share = share_units / UNITS_PER_WHOLE
    epsilon = share if accounting is Accounting.PURE_DP else math.sqrt(8 * share)
    scale = 2 * max(level, 1 - level) / epsilon
    measurement = quantile_measurement(accounting, level, max_candidate, scale)
    cost = _cost_units(measurement)
    while cost > share_units:  # float rounding can leave the map a hair above the share
        scale = math.nextafter(scale * (1 + 1e-12), math.inf)
        measurement = quantile_measurement(accounting, level, max_candidate, scale)
        cost = _cost_units(measurement)
    return measurement, scale, cost


def choose_bounds(
    histograms: Mapping[str, npt.NDArray[np.int64]],
    settings: BoundChoiceSettings,
    accounting: Accounting,
    period_counts: Mapping[str, int] | None = None,
) -> BoundChoice:
    """Run OpenDP's quantile once per bound named in `settings` and return the values chosen
    and their cost (its sum never exceeds the declared spend).

    `histograms` (from `patient_histograms`, with the same max_candidate) holds each bound's
    per-patient histogram; `period_counts` the number of periods (weeks, months) the
    dataset's public calendar has, which also caps a `.periods` bound's candidates.
    """
    share = settings.share_units()
    chosen = []
    for name in settings.bounds:
        counts = histograms.get(name)
        if counts is None:
            raise ValueError(f"no per-patient counts were given for {name}")
        if counts.shape != (settings.max_candidate + 2,):
            raise ValueError(
                f"the counts for {name} must cover values 0..{settings.max_candidate + 1}"
            )
        top = _max_candidate(name, settings.max_candidate, period_counts or {})
        measurement, scale, cost = _calibrated(accounting, settings.level, top, share)
        value = int(measurement(patient_vector(counts, top)))
        chosen.append(ChosenBound(name, value, top, scale, cost))
    return BoundChoice(accounting, settings.level, tuple(chosen))


def patient_vector(counts: npt.NDArray[np.int64], top: int) -> npt.NDArray[np.uint32]:
    """One value per patient, rebuilt from a histogram, values above `top` at top + 1 (no
    score changes: see the module docstring)."""
    clipped = counts[: top + 2].copy()
    clipped[top + 1] += int(counts[top + 2 :].sum())
    return np.repeat(np.arange(top + 2, dtype=_VALUE), clipped)


def _max_candidate(name: str, max_candidate: int, period_counts: Mapping[str, int]) -> int:
    if not name.endswith(PERIODS_SUFFIX):
        return max_candidate
    period = _period_of(name)
    count = period_counts.get(period or "")
    if count is None:
        raise ValueError(f"choosing {name} needs the number of {period}s in the dataset")
    if count < 1:
        raise ValueError(f"the dataset has no {period}s to bound")
    return min(max_candidate, count)


def _cost_units(measurement: Any) -> int:
    return to_units_ceil(Fraction(measurement.map(1)))


def _period_of(name: str) -> str | None:
    head, _, tail = name.partition(".")
    return head if tail else None


def _check_level(level: float) -> None:
    if isinstance(level, bool) or not isinstance(level, float | int):
        raise ValueError(f"the quantile level must be a number, not {level!r}")
    if not 0 < level < 1:
        raise ValueError(
            f"the quantile level must lie strictly between 0 and 1 (0.99: about 99% of "
            f"patients keep all their rows), not {level!r}"
        )
    exact = Decimal(repr(float(level)))
    if exact % LEVEL_STEP != 0:
        raise ValueError(
            f"the quantile level {level!r} has more than 4 decimal places; OpenDP scores "
            "quantiles in steps of 0.0001"
        )

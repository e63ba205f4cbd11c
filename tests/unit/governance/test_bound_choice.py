"""Bounds chosen privately (issue 18 item 2): OpenDP's quantile of rows per patient.

The statistics come from first principles. With a = the level and lt(c), gt(c) the patients
with fewer, more rows than candidate c, OpenDP's score is s(c) = |(1 - a) lt(c) - a gt(c)|
(in patients; OpenDP's integers are s times 10,000 at a = 0.99) and the noise has that
scale times 10,000, so candidate c is picked with probability

- under zCDP (exponential mechanism): exp(-s(c)/scale) / sum over c' of exp(-s(c')/scale);
- under pure DP (permute-and-flip, acceptance p(c) = exp(-(s(c) - min s)/scale)):
  p(c) * integral over t in [0, 1] of prod over c' != c of (1 - p(c') t)
  (candidates visited in a uniform random order: c' comes before c with probability t).

Both are at most exp(-(s(c) - min s)/scale), which gives the band a draw leaves with
probability below 1e-9.
"""

from __future__ import annotations

import json
import re
from fractions import Fraction
from pathlib import Path

import numpy as np
import numpy.typing as npt
import opendp.prelude as dp
import polars as pl
import pytest

from dpgate_server.governance.bound_choice import (
    BoundChoice,
    BoundChoiceSettings,
    ChosenBound,
    bucket_frames,
    calibrate_scale,
    choose_bounds,
    histogram,
    patient_histograms,
    patient_vector,
    quantile_measurement,
)
from dpgate_server.governance.patient_buckets import BucketFiles
from dpgate_server.spend import UNITS_PER_WHOLE, to_units_ceil
from dpgate_server.store.chosen_bounds import ChosenBoundsRecord
from dpgate_server.store.period_bounds import PeriodBounds, PeriodCap
from dpgate_server.vocabulary.accounting import Accounting

K = "max_contributions"
LEVEL = 0.99
TOP = 60
"""Candidates 1..60."""


def _rows_per_patient(patients: int, seed: int) -> npt.NDArray[np.int64]:
    """A heavy-ish tail like appointments a year: 1 + negative binomial(2, 0.25), mean 7,
    99th percentile about 23."""
    return np.random.default_rng(seed).negative_binomial(2, 0.25, patients) + 1


def _scores(values: npt.NDArray[np.int64], level: float = LEVEL) -> npt.NDArray[np.float64]:
    """s(c) for c = 1..TOP, from the values themselves."""
    candidates = np.arange(1, TOP + 1)[:, None]
    below = (values[None, :] < candidates).sum(axis=1)
    above = (values[None, :] > candidates).sum(axis=1)
    return np.abs((1 - level) * below - level * above)


def _weights(scores: npt.NDArray[np.float64], scale: float) -> npt.NDArray[np.float64]:
    return np.exp(-(scores - scores.min()) / scale)


def _exact_probabilities(
    scores: npt.NDArray[np.float64], scale: float, accounting: Accounting
) -> npt.NDArray[np.float64]:
    weights = _weights(scores, scale)
    if accounting is Accounting.ZCDP:
        return weights / weights.sum()
    t = np.linspace(0.0, 1.0, 20_001)
    blocking = 1 - weights[:, None] * t[None, :]  # candidate x time
    log_all = np.log(np.maximum(blocking, 1e-300)).sum(axis=0)
    out = np.empty(weights.size)
    for i, weight in enumerate(weights):
        others = np.exp(log_all - np.log(np.maximum(blocking[i], 1e-300)))
        out[i] = weight * np.trapezoid(others, t)
    return out


def _settings(spend: float, bounds: tuple[str, ...] = (K,), top: int = TOP) -> BoundChoiceSettings:
    return BoundChoiceSettings(bounds, LEVEL, round(spend * UNITS_PER_WHOLE), top)


def _spend_for_scale(accounting: Accounting, epsilon: float) -> float:
    return epsilon if accounting is Accounting.PURE_DP else epsilon**2 / 8


# what OpenDP sees


def test_histogram_gives_opendp_the_scores_of_the_raw_values() -> None:
    values = np.concatenate([_rows_per_patient(3_000, seed=1), [61, 75, 400, 10_000]])
    raw = dp.t.make_quantile_score_candidates(
        dp.vector_domain(dp.atom_domain(T="u32")),
        dp.symmetric_distance(),
        list(range(1, TOP + 1)),
        LEVEL,
    )
    rebuilt = patient_vector(histogram(values, TOP), TOP)
    assert rebuilt.size == values.size
    assert raw(rebuilt) == raw(values.astype(np.uint32))
    assert np.allclose(np.array(raw(values.astype(np.uint32))) / 10_000, _scores(values))


def test_a_patient_at_two_practices_is_counted_once_with_all_rows() -> None:
    rows = pl.LazyFrame(
        {
            "patient_key": [7, 7, 7, 8, 7, 7],
            "practice_code": [0, 0, 0, 0, 1, 1],
            "week": [1, 1, 2, 1, 2, 3],
        }
    )
    out = patient_histograms(rows, (K, "week.rows", "week.periods"), max_candidate=4)
    assert out[K].tolist() == [0, 1, 0, 0, 0, 1]  # patient 7: 5 rows (above 4), 8: 1 row
    assert out["week.rows"].tolist() == [0, 1, 1, 0, 0, 0]  # 7: 2, 2 and 1 rows in weeks 1-3
    assert out["week.periods"].tolist() == [0, 1, 0, 1, 0, 0]


def _append_practice(
    buckets: BucketFiles, patient: list[int], week: list[int], practice: int
) -> None:
    size = len(patient)
    codes = {
        "practice_code": np.full(size, practice, dtype=np.int32),
        "week": np.array(week, dtype=np.int32),
        "month": np.array([w // 5 for w in week], dtype=np.int32),
    }
    buckets.append(np.array(patient, dtype=np.int64), np.arange(size, dtype=np.uint64), codes)


@pytest.mark.parametrize("with_periods", [False, True])
def test_bucket_files_give_the_histograms_of_every_row(tmp_path: Path, with_periods: bool) -> None:
    rng = np.random.default_rng(3)
    first = rng.integers(0, 300, 2_000).tolist()
    second = rng.integers(200, 500, 1_500).tolist()  # patients 200..299 at both practices
    weeks = [rng.integers(0, 52, len(first)).tolist(), rng.integers(0, 52, len(second)).tolist()]
    with BucketFiles(tmp_path / "b", 8, with_periods=with_periods) as buckets:
        _append_practice(buckets, first, weeks[0], practice=0)
        _append_practice(buckets, second, weeks[1], practice=1)
    names = (K, "week.rows", "week.periods", "month.rows") if with_periods else (K,)
    from_buckets = patient_histograms(bucket_frames(buckets), names, max_candidate=TOP)
    every_row = pl.LazyFrame(
        {"patient_key": first + second, "week": weeks[0] + weeks[1]}
    ).with_columns(month=pl.col("week") // 5)
    assert {n: h.tolist() for n, h in from_buckets.items()} == {
        n: h.tolist() for n, h in patient_histograms(every_row, names, TOP).items()
    }
    assert from_buckets[K].sum() == len(set(first + second))
    assert (tmp_path / "b" / "00000.pairs").exists()  # left for the cut


# statistics


@pytest.mark.parametrize("accounting", list(Accounting))
def test_chosen_bound_stays_in_the_band_around_the_true_quantile(accounting: Accounting) -> None:
    values = _rows_per_patient(50_000, seed=18)
    scores = _scores(values)
    true_quantile = int(np.argmin(scores)) + 1
    assert true_quantile == int(np.quantile(values, LEVEL))
    epsilon = 0.1  # scale 2 * 0.99 / 0.1 = 19.8 patients, under either accounting
    settings = _settings(_spend_for_scale(accounting, epsilon))
    scale = calibrate_scale(accounting, LEVEL, TOP, settings.spend_units)[0]
    assert scale == pytest.approx(2 * LEVEL / epsilon, rel=1e-9)
    # the band: candidates outside it are picked with probability < 1e-9 a draw
    weights = _weights(scores, scale)
    order = np.argsort(weights)
    cut = np.searchsorted(np.cumsum(weights[order]), 1e-9, side="right")
    band = set((order[cut:] + 1).tolist())
    low, high = min(band), max(band)
    patients_over = {c: float((values > c).mean()) for c in (low, high)}
    assert (low, true_quantile) == (20, 23)
    assert patients_over[low] < 0.02  # 1.93% of patients
    histograms = {K: histogram(values, TOP)}
    draws = [choose_bounds(histograms, settings, accounting).value(K) for _ in range(100)]
    assert set(draws) <= band, sorted(set(draws) - band)


@pytest.mark.parametrize("accounting", list(Accounting))
def test_chosen_bounds_follow_the_mechanisms_distribution(accounting: Accounting) -> None:
    """2,000 patients at epsilon 0.3: noise moves the choice (the 39 candidates above every
    patient are only 20 patients' score away). The mean of 300 draws is within 5 standard
    errors of the exact mean; at twice or half the scale it would be 7 or more away."""
    values = _rows_per_patient(2_000, seed=5)
    settings = _settings(_spend_for_scale(accounting, 0.3))
    histograms = {K: histogram(values, TOP)}
    draws = np.array([choose_bounds(histograms, settings, accounting).value(K) for _ in range(300)])
    candidates = np.arange(1, TOP + 1)

    def mean_at(epsilon: float) -> tuple[float, float]:
        probabilities = _exact_probabilities(_scores(values), 2 * LEVEL / epsilon, accounting)
        assert probabilities.sum() == pytest.approx(1, abs=1e-6)
        mean = float((probabilities * candidates).sum())
        return mean, float(np.sqrt((probabilities * (candidates - mean) ** 2).sum()))

    mean, sd = mean_at(0.3)
    standard_error = sd / np.sqrt(draws.size)
    assert abs(draws.mean() - mean) < 5 * standard_error, (draws.mean(), mean, sd)
    for other in (0.15, 0.6):
        assert abs(mean_at(other)[0] - mean) > 7 * standard_error


@pytest.mark.parametrize(
    "values",
    [np.full(500, 1), np.full(500, 10_000), _rows_per_patient(500, seed=9)],
    ids=["every patient 1 row", "every patient above the candidates", "varied"],
)
def test_chosen_bound_is_never_below_one_nor_above_the_largest_candidate(
    values: npt.NDArray[np.int64],
) -> None:
    """At epsilon 0.001 the choice is nearly uniform over 1..60: a candidate 0 or 61 would
    show in 200 draws with probability above 95%."""
    histograms = {K: histogram(values, TOP)}
    settings = _settings(0.001)
    draws = {choose_bounds(histograms, settings, Accounting.PURE_DP).value(K) for _ in range(200)}
    assert min(draws) >= 1
    assert max(draws) <= TOP
    assert len(draws) > 30


def test_periods_bound_candidates_stop_at_the_calendar() -> None:
    settings = BoundChoiceSettings(("week.periods",), LEVEL, 100, 200)  # epsilon 1e-7: noise
    histograms = {"week.periods": histogram(np.full(100, 52), 200)}
    draws = {
        choose_bounds(histograms, settings, Accounting.PURE_DP, {"week": 53}).value("week.periods")
        for _ in range(200)
    }
    assert max(draws) <= 53
    assert len(draws) > 30
    (bound,) = choose_bounds(histograms, settings, Accounting.PURE_DP, {"week": 53}).bounds
    assert bound.max_candidate == 53


# cost


@pytest.mark.parametrize("accounting", list(Accounting))
@pytest.mark.parametrize("level", [0.5, 0.75, 0.9, 0.99, 0.9999, 0.01])
def test_cost_is_opendps_map_and_first_principles(accounting: Accounting, level: float) -> None:
    spend_units = 300_000_000
    scale, cost = calibrate_scale(accounting, level, TOP, spend_units)
    measurement = quantile_measurement(accounting, level, TOP, scale)
    assert cost == to_units_ceil(Fraction(measurement.map(1)))
    epsilon = 2 * max(level, 1 - level) / scale
    first_principles = epsilon if accounting is Accounting.PURE_DP else epsilon**2 / 8
    assert measurement.map(1) == pytest.approx(first_principles, rel=1e-12)
    assert spend_units - 1 <= cost <= spend_units  # the whole share, never more


@pytest.mark.parametrize("accounting", list(Accounting))
def test_declared_spend_is_shared_and_charged_once_per_bound(accounting: Accounting) -> None:
    names = (K, "week.rows", "week.periods")
    settings = BoundChoiceSettings(names, LEVEL, 1_000_000_000, TOP)
    values = pl.LazyFrame({"patient_key": list(range(200)) * 3, "week": [1] * 300 + [2] * 300})
    histograms = patient_histograms(values, names, TOP)
    choice = choose_bounds(histograms, settings, accounting, {"week": 53})
    assert [b.name for b in choice.bounds] == list(names)
    for bound in choice.bounds:
        measurement = quantile_measurement(accounting, LEVEL, bound.max_candidate, bound.scale)
        assert bound.spend_units == to_units_ceil(Fraction(measurement.map(1)))
        assert 333_333_332 <= bound.spend_units <= 333_333_333
    assert choice.spend_units == sum(b.spend_units for b in choice.bounds) <= 1_000_000_000
    record = json.loads(json.dumps(choice.to_dict()))
    assert record["spend_units"] == choice.spend_units
    assert record["level"] == LEVEL
    assert record["accounting"] == accounting.value
    assert [(b["name"], b["value"], b["candidates"]) for b in record["bounds"]] == [
        (b.name, b.value, [1, b.max_candidate]) for b in choice.bounds
    ]
    assert record["bounds"][2]["candidates"] == [1, 53]
    assert BoundChoice.from_dict(record) == choice


def test_chosen_values_replace_the_policys_and_keep_the_rest() -> None:
    settings = BoundChoiceSettings((K, "week.rows"), LEVEL, 10**12, TOP)  # no noise to speak of
    rows = pl.LazyFrame({"patient_key": [1, 1, 1, 1, *range(2, 1002)], "week": [5] * 1004})
    choice = choose_bounds(
        patient_histograms(rows, (K, "week.rows"), TOP), settings, Accounting.ZCDP
    )
    policy = PeriodBounds(
        (PeriodCap("week", rows=9, periods=10, practice_periods=8), PeriodCap("month", rows=20))
    )
    total, bounds = choice.apply(24, policy)
    assert (total, choice.value("week.rows")) == (1, 1)
    assert bounds == PeriodBounds(
        (PeriodCap("week", rows=1, periods=10, practice_periods=8), PeriodCap("month", rows=20))
    )
    only_k = BoundChoiceSettings((K,), LEVEL, 10**12, TOP)
    unchanged = choose_bounds({K: histogram([3] * 1000, TOP)}, only_k, Accounting.ZCDP)
    assert unchanged.apply(24, policy) == (3, policy)


def test_a_records_policy_values_undo_its_choice() -> None:
    """The next publish starts from the policy: a version's chosen values go back to the
    values its record keeps (a cap the choice added a field to loses it again), the rest
    stays."""
    policy = PeriodBounds(
        (PeriodCap("week", rows=9, practice_periods=8), PeriodCap("month", rows=20))
    )
    choice = BoundChoice(
        Accounting.ZCDP,
        LEVEL,
        (
            ChosenBound(K, 17, TOP, 1.0, 1),
            ChosenBound("week.rows", 4, TOP, 1.0, 1),
            ChosenBound("week.periods", 30, 53, 1.0, 1),
        ),
    )
    total, chosen = choice.apply(24, policy)
    assert chosen.cap("week") == PeriodCap("week", rows=4, periods=30, practice_periods=8)
    asked = (K, "week.rows", "week.periods")
    values = {K: 24, "week.rows": 9, "week.periods": None}
    record = ChosenBoundsRecord(asked, 3, values, choice)
    assert record.policy_bounds(total, chosen) == (24, policy)
    only_k = ChosenBoundsRecord(
        (K,), 1, {K: 24}, BoundChoice(Accounting.ZCDP, LEVEL, choice.bounds[:1])
    )
    assert only_k.policy_bounds(17, chosen) == (24, chosen)
    unpaid = ChosenBoundsRecord(asked, 3, values, note="the cap could not pay")
    assert unpaid.policy_bounds(24, policy) == (24, policy)


# refusals


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (((), 0.99, 10**8, 60), "name at least one bound"),
        ((("weekly",), 0.99, 10**8, 60), "unknown bound(s) 'weekly'"),
        (((K, K), 0.99, 10**8, 60), "each bound may be named once"),
        (((K,), 1.0, 10**8, 60), "strictly between 0 and 1"),
        (((K,), 0.0, 10**8, 60), "strictly between 0 and 1"),
        (((K,), 0.99995, 10**8, 60), "more than 4 decimal places"),
        (((K,), "0.99", 10**8, 60), "must be a number"),
        (((K,), 0.99, 0, 60), "must be positive"),
        (((K, "week.rows"), 0.99, 1, 60), "for each of the 2 bound(s)"),
        (((K,), 0.99, 0.5, 60), "whole number of nano units"),
        (((K,), 0.99, 10**8, 0), "from 1 to 100,000"),
        (((K,), 0.99, 10**8, 100_001), "from 1 to 100,000"),
    ],
)
def test_bad_settings_are_refused_by_name(arguments: tuple[object, ...], message: str) -> None:
    with pytest.raises(ValueError, match=_escaped(message)):
        BoundChoiceSettings(*arguments)  # type: ignore[arg-type]


def test_missing_or_mismatched_counts_are_refused() -> None:
    settings = BoundChoiceSettings((K, "week.periods"), LEVEL, 10**8, TOP)
    with pytest.raises(
        ValueError, match=_escaped("no per-patient counts were given for week.periods")
    ):
        choose_bounds({K: histogram([1], TOP)}, settings, Accounting.PURE_DP, {"week": 53})
    with pytest.raises(ValueError, match=_escaped("must cover values 0..61")):
        choose_bounds(
            {K: histogram([1], 10), "week.periods": histogram([1], TOP)},
            settings,
            Accounting.PURE_DP,
        )
    counts = {K: histogram([1], TOP), "week.periods": histogram([1], TOP)}
    with pytest.raises(ValueError, match="needs the number of weeks in the dataset"):
        choose_bounds(counts, settings, Accounting.PURE_DP)
    with pytest.raises(ValueError, match="cannot be negative"):
        histogram([-1], TOP)


def _escaped(text: str) -> str:
    return re.escape(text)

"""The analysis helpers' intervals against their stated coverage, with the truth known.

Noise is simulated with numpy exactly as the server draws it (integer Laplace as the
difference of two geometric variables; integer Gaussian by inverse CDF), from fixed seeds.
Statistical tolerances are 6 binomial standard deviations (a false alarm below 1e-8), and
each expected coverage is the exact one, so the tests can fail on a real error of ~0.5%.
"""

from __future__ import annotations

import math
from decimal import Decimal

import numpy as np
import polars as pl
import pytest

from dpgate._types import QueryResult
from dpgate.analysis import (
    Estimates,
    compare_with,
    estimates,
    per_population,
    ratio,
    round_for_display,
    sum_cells,
)
from dpgate_shared import noise_sums

LEVEL = 0.95
DRAWS = 40_000
TOLERANCE_SDS = 6.0


def laplace_noise(
    rng: np.random.Generator, scale: float, size: int | tuple[int, ...]
) -> np.ndarray:
    p = -math.expm1(-1.0 / scale)  # 1 - q
    return rng.geometric(p, size) - rng.geometric(p, size)


def gaussian_noise(rng: np.random.Generator, sigma: float, size: int) -> np.ndarray:
    support = np.arange(-math.ceil(40 * sigma), math.ceil(40 * sigma) + 1)
    weights = np.exp(-(support.astype(float) ** 2) / (2 * sigma * sigma))
    return rng.choice(support, size=size, p=weights / weights.sum())


def release(
    frame: pl.DataFrame,
    keys: tuple[str, ...],
    scale: float,
    release_id: str = "r1",
    mechanism: str = noise_sums.LAPLACE,
) -> QueryResult:
    width = noise_sums.half_width(mechanism, scale, LEVEL)
    frame = frame.with_columns(
        (pl.col("value") - width).cast(pl.Float64).alias("ci_low"),
        (pl.col("value") + width).cast(pl.Float64).alias("ci_high"),
    )
    return QueryResult(
        frame=frame,
        release_id=release_id,
        dataset_id="gp_appointments",
        dataset_version="v000001",
        group_by=keys,
        mechanism=mechanism,
        noise_scale=scale,
        confidence_level=LEVEL,
        charged=Decimal("0.5"),
        release_cost=Decimal("0.5"),
        remaining=Decimal("1"),
        repeat=False,
        canonical_query="{}",
    )


def assert_covers(hits: np.ndarray, expected: float) -> None:
    observed = float(np.mean(hits))
    sd = math.sqrt(expected * (1 - expected) / hits.size)
    assert abs(observed - expected) < TOLERANCE_SDS * sd, (observed, expected)


# sum_cells


def test_sum_cells_adds_values_within_groups() -> None:
    frame = pl.DataFrame(
        {"practice": ["a", "a", "b"], "week": ["w1", "w2", "w1"], "value": [10, 20, 5]}
    )
    summed = sum_cells(release(frame, ("practice", "week"), 4.0), by=["practice"]).frame
    assert summed.select("practice", "value", "cells").rows() == [("a", 30.0, 2), ("b", 5.0, 1)]


def test_sum_cells_interval_is_the_exact_width_for_its_cell_count() -> None:
    frame = pl.DataFrame({"week": ["w1", "w2", "w3"], "value": [10, 20, 5]})
    total = sum_cells(release(frame, ("week",), 48.0)).frame.row(0, named=True)
    width = noise_sums.half_width(noise_sums.LAPLACE, 48.0, LEVEL, 3)
    assert (total["ci_low"], total["ci_high"]) == (35.0 - width, 35.0 + width)


def test_sum_cells_filters_before_summing() -> None:
    frame = pl.DataFrame({"band": ["Same Day", "1 Day", "8 to 14 Days"], "value": [10, 20, 5]})
    kept = sum_cells(release(frame, ("band",), 4.0), where=pl.col("band") != "Same Day").frame
    assert kept.select("value", "cells").row(0) == (25.0, 2)


def test_sum_cells_refuses_a_key_the_release_does_not_have() -> None:
    frame = pl.DataFrame({"week": ["w1"], "value": [1]})
    with pytest.raises(ValueError, match="cannot group by"):
        sum_cells(release(frame, ("week",), 4.0), by=["practice"])


@pytest.mark.parametrize("cells", [2, 5, 52])
def test_sum_of_laplace_cells_covers_at_its_stated_level(cells: int) -> None:
    rng = np.random.default_rng(1000 + cells)
    scale = 48.0
    truth = rng.integers(0, 20_000, size=(DRAWS, cells))
    noisy = truth + laplace_noise(rng, scale, (DRAWS, cells))
    frame = pl.DataFrame(
        {
            "replicate": np.repeat(np.arange(DRAWS), cells),
            "week": np.tile(np.arange(cells), DRAWS),
            "value": noisy.ravel(),
        }
    )
    summed = sum_cells(release(frame, ("replicate", "week"), scale), by=["replicate"]).frame
    totals = truth.sum(axis=1)
    hits = (summed["ci_low"].to_numpy() <= totals) & (totals <= summed["ci_high"].to_numpy())
    width = noise_sums.half_width(noise_sums.LAPLACE, scale, LEVEL, cells)
    assert_covers(hits, noise_sums.coverage(noise_sums.LAPLACE, scale, width, cells))


def test_sum_of_gaussian_cells_covers_at_its_stated_level() -> None:
    rng = np.random.default_rng(7)
    sigma, cells = 6.0, 3
    noise = gaussian_noise(rng, sigma, DRAWS * cells).reshape(DRAWS, cells).sum(axis=1)
    width = noise_sums.half_width(noise_sums.GAUSSIAN, sigma, LEVEL, cells)
    assert_covers(
        np.abs(noise) <= width, noise_sums.coverage(noise_sums.GAUSSIAN, sigma, width, cells)
    )


def test_normal_width_would_undercover_two_laplace_cells() -> None:
    # The check above has the power to see the normal approximation's error.
    rng = np.random.default_rng(11)
    scale = 48.0
    noise = laplace_noise(rng, scale, (DRAWS, 2)).sum(axis=1)
    normal = math.floor(1.959964 * math.sqrt(2 * noise_sums.variance(noise_sums.LAPLACE, scale)))
    observed = float(np.mean(np.abs(noise) <= normal))
    sd = math.sqrt(LEVEL * (1 - LEVEL) / DRAWS)
    assert observed < LEVEL - TOLERANCE_SDS * sd


# ratio


def ratio_replicates(
    rng: np.random.Generator, numerator: int, denominator: int, scale: float
) -> tuple[QueryResult, QueryResult]:
    keys = np.arange(DRAWS)
    top = pl.DataFrame({"replicate": keys, "value": numerator + laplace_noise(rng, scale, DRAWS)})
    bottom = pl.DataFrame(
        {"replicate": keys, "value": denominator + laplace_noise(rng, scale, DRAWS)}
    )
    return (
        release(top, ("replicate",), scale, release_id="dna"),
        release(bottom, ("replicate",), scale, release_id="all"),
    )


@pytest.mark.parametrize(("numerator", "denominator"), [(300, 5_000), (40, 6_000), (2_000, 2_500)])
def test_ratio_of_two_releases_covers_at_least_its_level(numerator: int, denominator: int) -> None:
    rng = np.random.default_rng(numerator)
    top, bottom = ratio_replicates(rng, numerator, denominator, scale=96.0)
    rates = ratio(top, bottom, proportion=True)
    truth = numerator / denominator
    hits = (rates["ci_low"].to_numpy() <= truth) & (truth <= rates["ci_high"].to_numpy())
    sd = math.sqrt(LEVEL * (1 - LEVEL) / DRAWS)
    assert float(np.mean(hits)) >= LEVEL - TOLERANCE_SDS * sd


def test_ratio_of_sums_covers_at_least_its_level() -> None:
    rng = np.random.default_rng(5)
    cells, scale = 4, 48.0
    truth_top = np.full((DRAWS, cells), 150)
    truth_bottom = np.full((DRAWS, cells), 2_000)

    def summed(truth: np.ndarray, release_id: str) -> Estimates:
        frame = pl.DataFrame(
            {
                "replicate": np.repeat(np.arange(DRAWS), cells),
                "band": np.tile(np.arange(cells), DRAWS),
                "value": (truth + laplace_noise(rng, scale, truth.shape)).ravel(),
            }
        )
        return sum_cells(release(frame, ("replicate", "band"), scale, release_id), by=["replicate"])

    rates = ratio(summed(truth_top, "dna"), summed(truth_bottom, "all"))
    hits = (rates["ci_low"].to_numpy() <= 150 / 2_000) & (
        rates["ci_high"].to_numpy() >= 150 / 2_000
    )
    sd = math.sqrt(LEVEL * (1 - LEVEL) / DRAWS)
    assert float(np.mean(hits)) >= LEVEL - TOLERANCE_SDS * sd


def test_ratio_of_independent_releases_uses_square_root_levels() -> None:
    top = release(pl.DataFrame({"mode": ["a"], "value": [500]}), ("mode",), 96.0, "dna")
    bottom = release(pl.DataFrame({"mode": ["a"], "value": [5_000]}), ("mode",), 96.0, "all")
    width = noise_sums.half_width(noise_sums.LAPLACE, 96.0, math.sqrt(LEVEL))
    row = ratio(top, bottom).row(0, named=True)
    assert row["value"] == 0.1
    assert row["ci_low"] == pytest.approx((500 - width) / (5_000 + width))
    assert row["ci_high"] == pytest.approx((500 + width) / (5_000 - width))


def test_ratio_within_one_release_uses_bonferroni_levels() -> None:
    frame = pl.DataFrame({"mode": ["a"], "value": [500]})
    same = release(frame, ("mode",), 96.0, "one")
    width = noise_sums.half_width(noise_sums.LAPLACE, 96.0, (1 + LEVEL) / 2)
    row = ratio(same, same).row(0, named=True)
    assert row["ci_high"] == pytest.approx((500 + width) / (500 - width))


def test_proportion_interval_stays_within_zero_and_one() -> None:
    top = release(pl.DataFrame({"mode": ["home"], "value": [3]}), ("mode",), 96.0, "dna")
    bottom = release(pl.DataFrame({"mode": ["home"], "value": [200]}), ("mode",), 96.0, "all")
    row = ratio(top, bottom, proportion=True).row(0, named=True)
    assert (row["ci_low"], row["ci_high"]) == (0.0, 1.0)


def test_ratio_point_value_lies_in_its_interval_when_noise_made_it_negative() -> None:
    top = release(pl.DataFrame({"mode": ["home"], "value": [-20]}), ("mode",), 96.0, "dna")
    bottom = release(pl.DataFrame({"mode": ["home"], "value": [900]}), ("mode",), 96.0, "all")
    row = ratio(top, bottom, proportion=True).row(0, named=True)
    assert row["ci_low"] <= row["value"] <= row["ci_high"]
    assert row["value"] == 0.0


def test_ratio_is_unbounded_when_the_denominator_may_be_zero() -> None:
    top = release(pl.DataFrame({"mode": ["a"], "value": [30]}), ("mode",), 96.0, "dna")
    bottom = release(pl.DataFrame({"mode": ["a"], "value": [-4]}), ("mode",), 96.0, "all")
    row = ratio(top, bottom).row(0, named=True)
    assert math.isnan(row["value"])
    assert row["ci_high"] == math.inf


def test_ratio_refuses_different_keys() -> None:
    top = release(pl.DataFrame({"mode": ["a"], "value": [3]}), ("mode",), 9.0, "dna")
    bottom = release(pl.DataFrame({"band": ["a"], "value": [3]}), ("band",), 9.0, "all")
    with pytest.raises(ValueError, match="keys differ"):
        ratio(top, bottom)


# per_population, compare_with, round_for_display


def test_rate_per_population_scales_value_and_interval_exactly() -> None:
    counts = release(
        pl.DataFrame({"practice_code": ["A", "B"], "value": [600, 90]}), ("practice_code",), 48.0
    )
    sizes = pl.DataFrame({"practice_code": ["A", "B"], "list_size": [12_000, 3_000]})
    rates = per_population(counts, sizes, on="practice_code").sort("practice_code")
    width = noise_sums.half_width(noise_sums.LAPLACE, 48.0, LEVEL)
    assert rates["value"].to_list() == [50.0, 30.0]
    assert rates["ci_high"].to_list() == pytest.approx([(600 + width) / 12, (90 + width) / 3])


def test_rate_per_population_keeps_coverage() -> None:
    rng = np.random.default_rng(3)
    scale, truth, size = 96.0, 4_000, 7_500
    frame = pl.DataFrame(
        {"practice_code": np.arange(DRAWS), "value": truth + laplace_noise(rng, scale, DRAWS)}
    )
    sizes = pl.DataFrame({"practice_code": np.arange(DRAWS), "list_size": np.full(DRAWS, size)})
    rates = per_population(release(frame, ("practice_code",), scale), sizes, on="practice_code")
    true_rate = truth * 1_000 / size
    hits = (rates["ci_low"].to_numpy() <= true_rate) & (true_rate <= rates["ci_high"].to_numpy())
    width = noise_sums.half_width(noise_sums.LAPLACE, scale, LEVEL)
    assert_covers(hits, noise_sums.coverage(noise_sums.LAPLACE, scale, width))


def test_rate_per_population_never_goes_below_zero() -> None:
    counts = release(
        pl.DataFrame({"practice_code": ["A"], "value": [20]}), ("practice_code",), 48.0
    )
    sizes = pl.DataFrame({"practice_code": ["A"], "list_size": [400]})
    assert per_population(counts, sizes, on="practice_code")["ci_low"].to_list() == [0.0]


def test_rate_per_population_drops_groups_without_population() -> None:
    counts = release(
        pl.DataFrame({"practice_code": ["A", "B"], "value": [600, 90]}), ("practice_code",), 48.0
    )
    sizes = pl.DataFrame({"practice_code": ["A", "B"], "list_size": [12_000, 0]})
    assert per_population(counts, sizes, on="practice_code")["practice_code"].to_list() == ["A"]


def test_pooled_rate_divides_by_one_population() -> None:
    counts = release(pl.DataFrame({"week": ["w1", "w2"], "value": [600, 400]}), ("week",), 48.0)
    pooled = per_population(sum_cells(counts), 20_000).row(0, named=True)
    width = noise_sums.half_width(noise_sums.LAPLACE, 48.0, LEVEL, 2)
    assert (pooled["value"], pooled["ci_high"]) == (50.0, pytest.approx((1_000 + width) / 20))


def test_compare_with_labels_only_separated_intervals() -> None:
    frame = pl.DataFrame({"ci_low": [10.0, 1.0, 4.0], "ci_high": [12.0, 3.0, 9.0]})
    labels = compare_with(frame, low=5.0, high=8.0)["compared"].to_list()
    assert labels == ["higher", "lower", "not distinguishable"]


def test_display_rounding_follows_the_interval_width() -> None:
    frame = pl.DataFrame(
        {"value": [6234.7, 0.08312], "ci_low": [6091.7, 0.0712], "ci_high": [6377.7, 0.0951]}
    )
    shown = round_for_display(frame)
    assert shown.rows() == [(6230.0, 6090.0, 6380.0), (0.083, 0.071, 0.096)]


def test_display_rounding_leaves_unbounded_rows_alone() -> None:
    frame = pl.DataFrame({"value": [1.23456], "ci_low": [0.0], "ci_high": [math.inf]})
    assert round_for_display(frame).row(0) == (1.23456, 0.0, math.inf)


def test_estimates_of_a_release_count_one_cell_each() -> None:
    counts = release(pl.DataFrame({"week": ["w1", "w2"], "value": [6, 7]}), ("week",), 4.0)
    assert estimates(counts).frame["cells"].to_list() == [1, 1]

"""NHS publication conventions: rounding to the nearest 5 and suppression, as post-processing."""

from __future__ import annotations

import math

import polars as pl
import pytest

from dpgate.publication import nhs_conventions


def cells(
    values: list[int | None], lows: list[int | None], highs: list[int | None]
) -> pl.DataFrame:
    return pl.DataFrame(
        {"key": [f"k{i}" for i in range(len(values))], "value": values, "ci_low": lows,
         "ci_high": highs},
        schema_overrides={"value": pl.Int64, "ci_low": pl.Float64, "ci_high": pl.Float64},
    )  # fmt: skip


def test_values_round_to_the_nearest_five_halves_away_from_zero() -> None:
    frame = cells([12, 13, 1234, 1232, -3, -2, 0], [0] * 7, [0] * 7)
    out = nhs_conventions(frame, keys=["key"])
    assert out["value"].to_list() == [10, 15, 1235, 1230, -5, 0, 0]


def test_halves_round_away_from_zero() -> None:
    frame = pl.DataFrame({"value": [2.5, -2.5, 7.5], "ci_low": [0.0] * 3, "ci_high": [0.0] * 3})
    assert nhs_conventions(frame)["value"].to_list() == [5, -5, 10]


def test_interval_is_rounded_outwards_so_it_still_contains_the_computed_one() -> None:
    out = nhs_conventions(cells([100], [57], [143]), keys=["key"])
    assert out.row(0) == ("k0", 100, 55, 145, False)
    negative = nhs_conventions(cells([-3], [-44], [38]), keys=["key"])
    assert negative.row(0) == ("k0", -5, -45, 40, False)


def test_other_multiples_and_none() -> None:
    frame = cells([1234], [1190], [1278])
    assert nhs_conventions(frame, round_to=10).row(0) == (1230, 1190, 1280, False)
    assert nhs_conventions(frame, round_to=None).row(0) == (1234, 1190, 1278, False)


def test_cells_below_the_threshold_are_suppressed_and_flagged() -> None:
    frame = cells([7, 8, -20, 500], [-30, -29, -57, 463], [44, 45, 17, 537])
    out = nhs_conventions(frame, keys=["key"], suppress_below=8)
    assert out["suppressed"].to_list() == [True, False, True, False]
    assert out["value"].to_list() == [None, 10, None, 500]
    assert out["ci_low"].to_list() == [None, -30, None, 460]
    assert out["ci_high"].to_list() == [None, 45, None, 540]


def test_threshold_is_on_the_noisy_value_before_rounding() -> None:
    out = nhs_conventions(cells([9], [0], [20]), suppress_below=10)  # 9 would round to 10
    assert out["suppressed"].to_list() == [True]


def test_without_a_threshold_nothing_is_suppressed() -> None:
    out = nhs_conventions(cells([-100, 0], [-140, -40], [-60, 40]))
    assert out["suppressed"].to_list() == [False, False]
    assert out["value"].to_list() == [-100, 0]


def test_a_missing_value_stays_missing_and_is_not_flagged() -> None:
    out = nhs_conventions(cells([None, 20], [None, 0], [None, 40]), suppress_below=10)
    assert out["value"].to_list() == [None, 20]
    assert out["suppressed"].to_list() == [False, False]


def test_the_input_is_not_changed() -> None:
    frame = cells([12], [3], [21])
    before = frame.clone()
    nhs_conventions(frame, suppress_below=100)
    assert frame.equals(before)


@pytest.mark.parametrize("round_to", [0, -5, 2.5, True])
def test_a_bad_multiple_is_refused(round_to: object) -> None:
    with pytest.raises(ValueError, match="round_to"):
        nhs_conventions(cells([1], [0], [2]), round_to=round_to)  # type: ignore[arg-type]


@pytest.mark.parametrize("threshold", [math.nan, math.inf])
def test_a_bad_threshold_is_refused(threshold: float) -> None:
    with pytest.raises(ValueError, match="suppress_below"):
        nhs_conventions(cells([1], [0], [2]), suppress_below=threshold)

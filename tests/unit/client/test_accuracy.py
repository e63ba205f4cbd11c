"""Relative accuracy: half-widths as a fraction of the answer or of an expected value."""

from __future__ import annotations

import math

import polars as pl
import pytest

from dpgate.accuracy import median_rel_half_width, percent, relative_half_widths


def cells(values: list[int | None], half: int = 100) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "practice_code": [f"P{i}" for i in range(len(values))],
            "value": values,
            "ci_low": [None if v is None else v - half for v in values],
            "ci_high": [None if v is None else v + half for v in values],
        },
        schema_overrides={"value": pl.Int64},
    )


def test_relative_half_width_is_the_half_width_over_the_value() -> None:
    out = relative_half_widths(cells([2000, 400]))
    assert out["half_width"].to_list() == [100.0, 100.0]
    assert out["rel_half_width"].to_list() == [0.05, 0.25]


@pytest.mark.parametrize("value", [100, 40, 1, 0, -3])
def test_no_relative_figure_where_the_interval_reaches_zero(value: int) -> None:
    assert relative_half_widths(cells([value]))["rel_half_width"].to_list() == [None]


def test_a_missing_value_has_no_relative_figure() -> None:
    assert relative_half_widths(cells([None]))["rel_half_width"].to_list() == [None]


def test_rows_and_columns_are_kept() -> None:
    frame = cells([500, -3, 2000])
    out = relative_half_widths(frame)
    assert out.select(frame.columns).equals(frame)


def test_expected_number_applies_to_every_cell_even_negative_ones() -> None:
    out = relative_half_widths(cells([2000, -3]), expected=1000)
    assert out["expected"].to_list() == [1000.0, 1000.0]
    assert out["rel_half_width_expected"].to_list() == [0.1, 0.1]


def test_expected_frame_is_joined_on_the_keys() -> None:
    expected = pl.DataFrame({"practice_code": ["P1", "P0"], "expected": [500, 0]})
    out = relative_half_widths(cells([2000, 30, 70]), expected=expected, keys=["practice_code"])
    assert out["practice_code"].to_list() == ["P0", "P1", "P2"]
    # P0 expects 0 (no relative figure), P1 expects 500, P2 has no expected value.
    assert out["rel_half_width_expected"].to_list() == [None, 0.2, None]


def test_expected_frame_without_the_keys_is_refused() -> None:
    with pytest.raises(ValueError, match="key columns"):
        relative_half_widths(cells([1]), expected=pl.DataFrame({"expected": [1.0]}), keys=[])


def test_median_counts_cells_near_zero_as_infinitely_wide() -> None:
    out = relative_half_widths(cells([2000, 1000, 500, 50, -10]))  # 5%, 10%, 20%, n/a, n/a
    assert median_rel_half_width(out) == pytest.approx(0.2)
    mostly_noise = relative_half_widths(cells([2000, 50, -10]))
    assert median_rel_half_width(mostly_noise) == math.inf


def test_median_of_an_even_number_of_cells() -> None:
    out = relative_half_widths(cells([2000, 1000, 500, 400]))  # 5%, 10%, 20%, 25%
    assert median_rel_half_width(out) == pytest.approx(0.15)


def test_percent_words() -> None:
    assert percent(0.0512) == "5.1%"
    assert percent(None) == "n/a"
    assert percent(math.inf) == ">= 100%"

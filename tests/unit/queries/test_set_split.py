"""Splitting a total so every query's relative half-width is equal (queries/set_split.py)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dpgate_server.queries.set_split import split_total
from dpgate_server.vocabulary.accounting import Accounting


def widths_at(split, half_widths, spends, accounting):
    """Each query's half-width at its share, by the scaling the split assumes."""
    p = 1.0 if accounting is Accounting.PURE_DP else 0.5
    return [
        w * (s / share) ** p
        for w, s, share in zip(half_widths, spends, split.spend_units, strict=True)
    ]


@pytest.mark.parametrize("accounting", [Accounting.PURE_DP, Accounting.ZCDP])
def test_the_split_adds_up_and_equalises_relative_half_widths(accounting):
    half_widths, spends, expected = [120.0, 40.0, 900.0], [10**8, 10**8, 5 * 10**8], [500, 1e5, 2e6]
    split = split_total(10**9, half_widths, spends, expected, accounting)
    assert sum(split.spend_units) == 10**9
    relative = [
        w / e
        for w, e in zip(widths_at(split, half_widths, spends, accounting), expected, strict=True)
    ]
    for value in relative:
        assert value == pytest.approx(split.relative_half_width, rel=1e-3)  # whole units


def test_under_pure_dp_a_query_twice_as_noisy_per_unit_gets_twice_the_share():
    split = split_total(3_000, [2.0, 1.0], [1, 1], [1.0, 1.0], Accounting.PURE_DP)
    assert split.spend_units == (2_000, 1_000)


def test_under_zcdp_shares_go_with_the_square_of_the_noise():
    split = split_total(5_000, [2.0, 1.0], [1, 1], [1.0, 1.0], Accounting.ZCDP)
    assert split.spend_units == (4_000, 1_000)


@given(
    total=st.integers(min_value=1, max_value=10**12),
    widths=st.lists(st.floats(min_value=0.1, max_value=1e6), min_size=1, max_size=20),
)
def test_the_shares_never_add_up_to_more_than_the_total(total, widths):
    count = len(widths)
    split = split_total(total, widths, [10**9] * count, [1.0] * count, Accounting.PURE_DP)
    assert sum(split.spend_units) == total
    assert all(units >= 0 for units in split.spend_units)
    assert math.isfinite(split.relative_half_width)


def test_mismatched_inputs_are_refused():
    with pytest.raises(ValueError, match="one half-width"):
        split_total(10, [1.0, 2.0], [1], [1.0, 1.0], Accounting.PURE_DP)

"""`dpgate describe` says what a version's contribution bounds are and what they change."""

from __future__ import annotations

from dpgate import ContributionBounds, PeriodCap
from dpgate.cli.analyst import bounds_in_words

WEEKS = (PeriodCap("week", rows=3, periods=None, practice_periods=None),)


def test_without_a_record_each_query_truncates() -> None:
    (line,) = bounds_in_words(None, 24, "pure_dp")
    assert "each query keeps at most 24 rows per patient" in line
    assert "not verified" not in line


def test_an_unverified_record_is_not_what_costs_follow() -> None:
    (line,) = bounds_in_words(ContributionBounds(24, False, "cut", WEEKS), 24, "zcdp")
    assert "each query keeps at most 24 rows" in line
    assert "not verified" in line


def test_pure_dp_says_the_period_caps_help_only_when_g_times_k_is_below_k() -> None:
    lines = bounds_in_words(ContributionBounds(24, True, "cut", WEEKS), 24, "pure_dp")
    assert lines[1] == "  per week: at most 3 rows (k)"
    assert "min(K, g * k), less than K only when g * k < K" in lines[2]


def test_without_period_caps_no_cost_rule_is_added() -> None:
    assert len(bounds_in_words(ContributionBounds(24, True, "cut"), 24, "zcdp")) == 1

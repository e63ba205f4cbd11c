"""dpgate.plot: every chart shows the interval, starts its value axis at zero, labels rows,
and matplotlib is loaded only when a chart is drawn."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from collections.abc import Iterator
from decimal import Decimal

import polars as pl
import pytest
from matplotlib import pyplot
from matplotlib.collections import PolyCollection

from dpgate import QueryResult, compare_with, complete_weeks, days_in_period, plot

WEEKS = [f"2025-W{n:02d}" for n in range(1, 21)]


def weekly_release(values: list[float], half: float = 50.0) -> QueryResult:
    frame = pl.DataFrame({"week": WEEKS[: len(values)], "value": values}).with_columns(
        (pl.col("value") - half).alias("ci_low"), (pl.col("value") + half).alias("ci_high")
    )
    return QueryResult(
        frame=frame,
        release_id="r1",
        dataset_id="gp_appointments",
        dataset_version="v000001",
        group_by=("week",),
        mechanism="laplace",
        noise_scale=10.0,
        confidence_level=0.95,
        charged=Decimal("0.5"),
        release_cost=Decimal("0.5"),
        remaining=Decimal("1"),
        repeat=False,
        canonical_query="{}",
    )


@pytest.fixture(autouse=True)
def close_figures() -> Iterator[None]:
    pyplot.switch_backend("Agg")  # headless
    yield
    pyplot.close("all")


def test_estimates_draw_the_interval_as_a_band_around_the_line() -> None:
    ax = plot.estimates(weekly_release([1000.0, 1010.0, 990.0]), "week")
    (band,) = [c for c in ax.collections if isinstance(c, PolyCollection)]
    lows = band.get_paths()[0].vertices[:, 1]
    assert lows.min() == pytest.approx(940.0)
    assert lows.max() == pytest.approx(1060.0)
    assert "95% interval" in [t.get_text() for t in ax.get_legend().get_texts()]


def test_estimates_axis_starts_at_zero_however_high_the_values() -> None:
    ax = plot.estimates(weekly_release([100_000.0, 100_300.0]), "week")
    assert ax.get_ylim()[0] == 0


def test_estimates_axis_goes_below_zero_for_a_negative_noisy_value() -> None:
    ax = plot.estimates(weekly_release([-20.0, 30.0]), "week")
    assert ax.get_ylim()[0] == pytest.approx(-70.0)


def test_estimates_one_line_and_band_per_group() -> None:
    frame = pl.DataFrame(
        {
            "week": WEEKS[:2] * 2,
            "mode": ["Telephone"] * 2 + ["Home Visit"] * 2,
            "value": [500.0, 510.0, 20.0, 22.0],
        }
    ).with_columns(ci_low=pl.col("value") - 9, ci_high=pl.col("value") + 9)
    ax = plot.estimates(frame, "week", by="mode")
    assert [line.get_label() for line in ax.get_lines()] == ["Telephone", "Home Visit"]
    assert len([c for c in ax.collections if isinstance(c, PolyCollection)]) == 2


def test_many_categories_get_at_most_fourteen_tick_labels() -> None:
    ax = plot.estimates(weekly_release([100.0] * 20), "week")
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert 1 < len(labels) <= plot.MAX_TICK_LABELS
    assert labels[0] == "2025-W01"


def test_relative_error_is_the_half_width_as_a_percentage_of_the_value() -> None:
    ax = plot.relative_error(weekly_release([1000.0, 500.0, -10.0], half=50.0), "week")
    (line,) = ax.get_lines()
    assert list(line.get_ydata()) == pytest.approx([5.0, 10.0])  # the negative value is left out
    assert ax.get_ylim()[0] == 0


def test_ranking_labels_every_row_and_colours_the_verdicts() -> None:
    frame = pl.DataFrame(
        {"practice_code": ["A1", "B2", "C3"], "value": [30.0, 10.0, 20.0]}
    ).with_columns(ci_low=pl.col("value") - 2, ci_high=pl.col("value") + 2)
    ax = plot.ranking(compare_with(frame, 19.0, 21.0), "practice_code", reference=(19.0, 21.0))
    assert [t.get_text() for t in ax.get_yticklabels()] == ["B2", "C3", "A1"]
    legend = {t.get_text() for t in ax.get_legend().get_texts()}
    assert {"higher (1)", "lower (1)", "not distinguishable (1)"} <= legend
    assert ax.get_xlim()[0] == 0


def test_ranking_draws_a_negative_value_whose_interval_was_raised_to_zero() -> None:
    """per_population raises a negative lower end to 0 and keeps the noisy value: a small
    practice's value can then lie below its own interval (it failed the planner notebook)."""
    frame = pl.DataFrame(
        {"practice_code": ["A1", "B2"], "value": [-1.5, 20.0], "ci_low": [0.0, 18.0]}
    ).with_columns(ci_high=pl.col("value") + 4)
    ax = plot.ranking(frame, "practice_code")
    assert [t.get_text() for t in ax.get_yticklabels()] == ["A1", "B2"]
    assert ax.get_xlim()[0] <= -1.5


def test_cumulative_spend_is_plotted_over_dates_with_the_cap() -> None:
    frame = pl.DataFrame(
        {
            "time": ["2025-03-02T10:00:00Z", "2025-03-01T09:00:00Z", "2025-03-05T12:00:00Z"],
            "dataset_id": ["gp"] * 3,
            "spend": ["0.5", "0.25", "1"],
        }
    )
    ax = plot.cumulative_spend(frame, cap=4)
    steps = next(line for line in ax.get_lines() if line.get_label() == "gp")
    assert list(steps.get_ydata()) == [0.25, 0.75, 1.75]
    first = steps.get_xdata()[0]
    assert first.date() == dt.date(2025, 3, 1)
    assert any(line.get_label() == "cap (epsilon 4)" for line in ax.get_lines())


def test_importing_dpgate_plot_loads_no_matplotlib() -> None:
    code = "import sys, dpgate.plot\nassert 'matplotlib' not in sys.modules\n"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_drawing_without_matplotlib_says_which_extra_to_install() -> None:
    code = (
        "import sys\nsys.modules['matplotlib'] = None\n"
        "import polars as pl\nfrom dpgate import plot\n"
        "frame = pl.DataFrame({'x': ['a'], 'value': [1.0], 'ci_low': [0.0], 'ci_high': [2.0]})\n"
        "plot.estimates(frame, 'x')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 1
    assert "pip install 'dpgate[notebooks]'" in result.stderr


def test_partial_weeks_at_the_ends_of_the_period_are_counted_and_dropped() -> None:
    start, end = dt.date(2024, 12, 1), dt.date(2025, 11, 30)
    assert [days_in_period(w, start, end) for w in ("2024-W48", "2024-W49", "2025-W49")] == [
        1,
        7,
        0,
    ]
    frame = pl.DataFrame({"week": ["2024-W48", "2025-W10", "2025-W48"], "value": [1, 2, 3]})
    assert complete_weeks(frame, start, end)["week"].to_list() == ["2025-W10", "2025-W48"]

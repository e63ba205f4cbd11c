"""Arithmetic on DP answers that keeps its intervals honest: sums, ratios, rates, rounding.

A released cell is `true + X`, X an independent integer noise draw of known distribution
(the release's `mechanism` and `noise_scale`). Everything here is post-processing: it
spends nothing and reads no data. What each helper guarantees:

* `sum_cells`: the sum of n cells carries the sum of n independent draws; its interval is
  computed from that sum's exact distribution (`dpgate_shared.noise_sums`, the module the
  server's derived answers use too), so it covers the true total with at least the
  stated probability, and is never a normal approximation that is too narrow for a few
  Laplace cells. A derived answer's rows are sums already: their `cells` column says of
  how many released cells, and summing them further stays exact. It widens like
  sqrt(n): ask for the coarse grouping directly when you can, rather than adding fine
  cells up.
* `ratio`: numerator and denominator from two releases have independent noise; each is
  given an exact interval at level sqrt(c), so both hold at once with probability c, and
  the ratio of two non-negative quantities then lies in [low_n / high_d, high_n / low_d].
  Conservative (coverage >= c), never too narrow. From one release (dependent noise) the
  levels are (1 + c) / 2 each instead (Bonferroni).
* `per_population`: scales by an exact public population, so the interval keeps its
  coverage.
* `compare_with`: labels a group "higher" or "lower" only when its interval and the
  reference's do not overlap; otherwise "not distinguishable".
* `round_for_display`: rounds for reading, to the precision the interval supports.
* `complete_weeks` / `days_in_period`: the ISO weeks a period only partly covers hold
  fewer days, so their counts look like a drop; leave them out or label them.

Example:
    >>> from dpgate import count, sum_cells
    >>> weekly = client.query(count("gp_appointments").by("week").epsilon(0.5))  # doctest: +SKIP
    >>> sum_cells(weekly).frame  # the year's total, with its wider interval  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import polars as pl

from dpgate._types import BiasFigure, QueryResult
from dpgate_shared import noise_sums
from dpgate_shared.confidence import check_confidence_level

_INTERVAL = ("value", "ci_low", "ci_high")


@dataclass(frozen=True, slots=True)
class Estimates:
    """Noisy values per group with their intervals, and the noise that produced them.

    `frame` has the key columns, then `value`, `ci_low`, `ci_high` and `cells` (how many
    released cells were added up into the row, each with its own independent noise draw).
    """

    frame: pl.DataFrame
    keys: tuple[str, ...]
    mechanism: str
    noise_scale: float
    confidence_level: float
    release_ids: tuple[str, ...]
    """The releases the values come from (cells of one release have independent noise)."""
    bias_figure: BiasFigure | None = None
    """How many patients lost rows to each bound of the version the values come from (sums
    are low by their dropped rows; no interval here covers that); None if it records none."""


def estimates(result: QueryResult) -> Estimates:
    """A release's cells as `Estimates`: one cell per row, or for a derived answer each
    row's `cells` (the released cells it adds up, each with its own draw)."""
    cells = (
        pl.col("cells").cast(pl.Int64)
        if "cells" in result.frame.columns and result.derived_from
        else pl.lit(1, dtype=pl.Int64).alias("cells")
    )
    frame = result.frame.with_columns(pl.col("value").cast(pl.Float64), cells)
    return Estimates(
        frame=frame,
        keys=result.group_by,
        mechanism=result.mechanism,
        noise_scale=result.noise_scale,
        confidence_level=result.confidence_level,
        release_ids=(result.derived_from or result.release_id,),  # its noise is the source's
        bias_figure=result.bias_figure,
    )


def sum_cells(
    source: QueryResult | Estimates,
    by: Sequence[str] = (),
    *,
    where: pl.Expr | None = None,
    confidence_level: float | None = None,
) -> Estimates:
    """Add cells up within groups of `by` (all of them when `by` is empty).

    Args:
        source: a release (or earlier sums of one).
        by: key columns to keep; the others are summed over.
        where: an optional Polars filter on the cells before summing, e.g.
            `pl.col("lead_time_band").is_in(["8 to 14 Days", "15 to 21 Days"])`.
        confidence_level: the interval's level (default: the source's).

    Returns:
        Estimates with one row per group: the summed value and the exact interval of a sum
        of that many independent draws.
    """
    base = _as_estimates(source)
    unknown = [k for k in by if k not in base.keys]
    if unknown:
        raise ValueError(f"cannot group by {unknown}: the keys are {list(base.keys)}")
    level = base.confidence_level if confidence_level is None else confidence_level
    cells = base.frame if where is None else base.frame.filter(where)
    totals = (
        cells.group_by(list(by), maintain_order=True).agg(pl.sum("value"), pl.sum("cells"))
        if by
        else cells.select(pl.sum("value"), pl.sum("cells"))
    )
    if totals.is_empty() or (not by and totals["cells"][0] == 0):
        raise ValueError("no cells to sum (the filter left none)")
    summed = Estimates(
        frame=totals,
        keys=tuple(by),
        mechanism=base.mechanism,
        noise_scale=base.noise_scale,
        confidence_level=level,
        release_ids=base.release_ids,
        bias_figure=base.bias_figure,
    )
    half = _half_width_column(summed, level)
    frame = totals.with_columns(
        (pl.col("value") - half).alias("ci_low"), (pl.col("value") + half).alias("ci_high")
    ).select(*by, *_INTERVAL, "cells")
    return dataclasses.replace(summed, frame=frame)


def ratio(
    numerator: QueryResult | Estimates,
    denominator: QueryResult | Estimates,
    *,
    proportion: bool = False,
    confidence_level: float | None = None,
) -> pl.DataFrame:
    """Numerator over denominator per group, with a conservative interval.

    Both must be non-negative quantities (counts, or sums of a column bounded below by 0)
    with the same keys. `proportion=True` says the numerator counts a subset of the
    denominator (e.g. DNAs of all appointments), so the true ratio lies in [0, 1] and the
    interval is clipped to it. Where the denominator's interval reaches 0, the ratio is
    unbounded above (ci_high is infinite, or 1 for a proportion).

    Returns:
        The keys, `numerator`, `denominator`, then `value` (their ratio, clipped to the
        possible range like the interval; NaN where the noisy denominator is not
        positive), `ci_low` and `ci_high`.
    """
    top, bottom = _as_estimates(numerator), _as_estimates(denominator)
    if set(top.keys) != set(bottom.keys):
        raise ValueError(f"keys differ: {list(top.keys)} and {list(bottom.keys)}")
    level = top.confidence_level if confidence_level is None else confidence_level
    level = check_confidence_level(level)
    shared = set(top.release_ids) & set(bottom.release_ids)
    each = (1.0 + level) / 2.0 if shared else math.sqrt(level)
    upper = 1.0 if proportion else math.inf
    joined = _with_half_width(top, each).join(
        _with_half_width(bottom, each), on=list(top.keys), how="inner", suffix="_d"
    )
    n, d = pl.col("value"), pl.col("value_d")
    n_low = pl.max_horizontal(n - pl.col("half"), pl.lit(0.0))
    n_high = n + pl.col("half")
    d_low = d - pl.col("half_d")
    d_high = d + pl.col("half_d")
    frame = joined.select(
        *top.keys,
        n.alias("numerator"),
        d.alias("denominator"),
        pl.when(d > 0).then((n / d).clip(0.0, upper)).otherwise(float("nan")).alias("value"),
        pl.when(d_high > 0).then(n_low / d_high).otherwise(0.0).clip(0.0, upper).alias("ci_low"),
        pl.when(d_low > 0).then(n_high / d_low).otherwise(upper).clip(0.0, upper).alias("ci_high"),
    )
    return frame


def per_population(
    source: QueryResult | Estimates,
    population: pl.DataFrame | float,
    *,
    on: str | None = None,
    size_column: str = "list_size",
    per: float = 1_000.0,
) -> pl.DataFrame:
    """Values per `per` people, from an exact public population (e.g. practice list sizes).

    Dividing by a public, exact number keeps the interval's coverage. Counts and sums of
    dpgate's columns are never negative, so the interval's lower end is raised to 0 where
    noise took it below (coverage is unchanged). Groups without a population, or with a
    population of zero, are dropped.

    Args:
        source: a release or sums grouped by `on` (and possibly more keys).
        population: a public table with columns `on` and `size_column`, such as
            `client.public_table("gp_appointments", "practices")`; or one number for
            every row (e.g. the total list size, for a pooled rate).
        on: the key column shared by the estimates and the table.
        size_column: the population column of the table.
        per: the rate's base (1,000 for "per 1,000 registered patients").

    Returns:
        The keys, `count` (the noisy value), `population`, then `value`, `ci_low`, `ci_high`
        per `per` people.
    """
    base = _as_estimates(source)
    if isinstance(population, pl.DataFrame):
        if on is None or on not in base.keys:
            raise ValueError(f"on must name a key of the estimates ({list(base.keys)})")
        sizes = population.select(
            pl.col(on), pl.col(size_column).cast(pl.Float64).alias("population")
        )
        joined = base.frame.join(sizes, on=on, how="inner")
    else:
        joined = base.frame.with_columns(pl.lit(float(population)).alias("population"))
    scale = per / pl.col("population")
    return joined.filter(pl.col("population") > 0).select(
        *base.keys,
        pl.col("value").alias("count"),
        "population",
        (pl.col("value") * scale).alias("value"),
        (pl.max_horizontal(pl.col("ci_low"), pl.lit(0.0)) * scale).alias("ci_low"),
        (pl.col("ci_high") * scale).alias("ci_high"),
    )


def compare_with(frame: pl.DataFrame, low: float, high: float) -> pl.DataFrame:
    """Label each row against a reference interval [low, high] (e.g. the pooled rate).

    Adds `compared`: "higher" when the row's whole interval is above `high`, "lower" when
    below `low`, otherwise "not distinguishable": the noise cannot tell the two apart,
    whatever the point values say. Non-overlap is a conservative test.
    """
    return frame.with_columns(
        pl.when(pl.col("ci_low") > high)
        .then(pl.lit("higher"))
        .when(pl.col("ci_high") < low)
        .then(pl.lit("lower"))
        .otherwise(pl.lit("not distinguishable"))
        .alias("compared")
    )


def round_for_display(
    frame: pl.DataFrame,
    *,
    significant: int = 2,
    columns: Sequence[str] = _INTERVAL,
) -> pl.DataFrame:
    """Round `value`, `ci_low` and `ci_high` to the precision the interval supports.

    Each row is rounded to the decimal place of the `significant`-th significant digit of
    its interval's half-width (6,234.7 +/- 143 shows as 6,230 [6,090, 6,380] at two digits);
    the bounds are rounded outwards so the shown interval contains the computed one. For
    reading only: do arithmetic on the unrounded frame.
    """
    if significant < 1:
        raise ValueError("significant must be at least 1")
    value, low, high = columns
    rows = zip(frame[value].to_list(), frame[low].to_list(), frame[high].to_list(), strict=True)
    shown: list[tuple[float | None, float | None, float | None]] = []
    for v, lo, hi in rows:
        step = _display_step(lo, hi, significant)
        shown.append(
            (
                _round_to(v, step, round),
                _round_to(lo, step, math.floor),
                _round_to(hi, step, math.ceil),
            )
        )
    return frame.with_columns(
        pl.Series(name, [row[i] for row in shown], dtype=pl.Float64)
        for i, name in enumerate((value, low, high))
    )


def days_in_period(week: str, period_start: dt.date, period_end: dt.date) -> int:
    """How many days of the ISO week `week` ("2025-W10") lie in the period (0 to 7).

    Example:
        >>> days_in_period("2024-W48", dt.date(2024, 12, 1), dt.date(2025, 11, 30))
        1
        >>> days_in_period("2025-W10", dt.date(2024, 12, 1), dt.date(2025, 11, 30))
        7
    """
    year, _, number = week.partition("-W")
    monday = dt.date.fromisocalendar(int(year), int(number), 1)
    first, last = max(monday, period_start), min(monday + dt.timedelta(days=6), period_end)
    return max(0, (last - first).days + 1)


def complete_weeks(
    frame: pl.DataFrame, period_start: dt.date, period_end: dt.date, column: str = "week"
) -> pl.DataFrame:
    """The rows whose ISO week lies wholly inside the period (the partial first and last
    weeks hold only a few days: their low counts are the calendar, not a fall in demand).

    Example:
        >>> frame = pl.DataFrame({"week": ["2024-W48", "2024-W49", "2025-W48"]})
        >>> complete_weeks(frame, dt.date(2024, 12, 1), dt.date(2025, 11, 30))["week"].to_list()
        ['2024-W49', '2025-W48']
    """
    weeks = frame[column].unique().to_list()
    whole = [w for w in weeks if days_in_period(str(w), period_start, period_end) == 7]
    return frame.filter(pl.col(column).is_in(whole))


def _as_estimates(source: QueryResult | Estimates) -> Estimates:
    return estimates(source) if isinstance(source, QueryResult) else source


def _half_width_column(source: Estimates, level: float) -> pl.Expr:
    """The interval half-width of each row, computed once per distinct cell count."""
    counts = source.frame["cells"].unique().to_list()
    widths = {
        int(n): float(noise_sums.half_width(source.mechanism, source.noise_scale, level, int(n)))
        for n in counts
    }
    return pl.col("cells").replace_strict(widths, return_dtype=pl.Float64)


def _with_half_width(source: Estimates, level: float) -> pl.DataFrame:
    return source.frame.select(
        *source.keys, "value", _half_width_column(source, level).alias("half")
    )


def _display_step(low: float | None, high: float | None, significant: int) -> float | None:
    if low is None or high is None or not (math.isfinite(low) and math.isfinite(high)):
        return None
    half = (high - low) / 2.0
    if half <= 0:
        return None
    return 10.0 ** (math.floor(math.log10(half)) - significant + 1)


def _round_to(x: float | None, step: float | None, how: Callable[[float], float]) -> float | None:
    """`x` rounded by `how` to a multiple of `step` (None: left as it is)."""
    if x is None or step is None or not math.isfinite(x):
        return x
    digits = max(0, -math.floor(math.log10(step)))
    return float(round(how(x / step) * step, digits))

"""Relative accuracy: each interval's half-width as a fraction of the answer, or of a value
the planner expects.

An interval `value +/- h` says little until it is set against the size of the value: +/-
150 is precise for a national weekly count and useless for one practice's week. Two
relative measures, both post-processing (they spend nothing and read no data):

* `rel_half_width` = h / value, the half-width as a fraction of the noisy answer itself.
  Where the interval reaches zero or below (value <= h: the answer cannot be told apart
  from zero, and the ratio would be 100% or more, or a huge or negative figure for a
  value near zero) it is null rather than a misleading number. A median over cells
  must count those nulls as "100% or more": `median_rel_half_width` does.
* `rel_half_width_expected` = h / expected, against a value the planner supplies (a
  figure from last year, a list size times a rate): honest where the answer is small or
  negative, and available before anything is spent (`Client.preview(..., expected=...)`).
  Null where the expected value is missing or not positive.

Example:
    >>> frame = pl.DataFrame({"value": [2000, 40, -3], "ci_low": [1900, -60, -103],
    ...                       "ci_high": [2100, 140, 97]})
    >>> relative_half_widths(frame, expected=1000)["rel_half_width"].to_list()
    [0.05, None, None]
    >>> relative_half_widths(frame, expected=1000)["rel_half_width_expected"].to_list()
    [0.1, 0.1, 0.1]
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import polars as pl

HALF_WIDTH = "half_width"
REL_HALF_WIDTH = "rel_half_width"
EXPECTED = "expected"
REL_HALF_WIDTH_EXPECTED = "rel_half_width_expected"

Expected = float | int | pl.DataFrame
"""One expected value for every cell, or a frame of the key columns and `expected`."""


def relative_half_widths(
    frame: pl.DataFrame,
    *,
    expected: Expected | None = None,
    keys: Sequence[str] = (),
) -> pl.DataFrame:
    """`frame` (with `value`, `ci_low`, `ci_high`) with its relative accuracy added.

    Adds `half_width` and `rel_half_width`; with `expected`, also `expected` and
    `rel_half_width_expected`. Rows keep their order; nothing else changes.

    Args:
        frame: cells with their intervals (a release's `frame`, or sums of its cells).
        expected: what the planner expects each value to be: one number for every cell,
            or a frame holding the key columns and an `expected` column (cells without a
            row get null).
        keys: the key columns to join a frame of expected values on.

    Raises:
        ValueError: a frame of expected values without an `expected` column or the keys.
    """
    half = ((pl.col("ci_high") - pl.col("ci_low")) / 2.0).alias(HALF_WIDTH)
    out = frame.with_columns(half).with_columns(
        pl.when(pl.col("ci_low") > 0)
        .then(pl.col(HALF_WIDTH) / pl.col("value"))
        .otherwise(None)
        .alias(REL_HALF_WIDTH)
    )
    if expected is None:
        return out
    out = _with_expected(out, expected, keys)
    return out.with_columns(relative_to(pl.col(EXPECTED)).alias(REL_HALF_WIDTH_EXPECTED))


def relative_to(expected: pl.Expr, half_width: pl.Expr | float | None = None) -> pl.Expr:
    """The half-width as a fraction of `expected`; null where that is missing or not > 0."""
    half = pl.col(HALF_WIDTH) if half_width is None else pl.lit(half_width)
    return (pl.when(expected > 0).then(half / expected.cast(pl.Float64)).otherwise(None)).cast(
        pl.Float64
    )


def relative_to_value(half_width: float, expected: float | None) -> float | None:
    """One half-width as a fraction of one expected value (None when it is not > 0)."""
    if expected is None or not math.isfinite(expected) or expected <= 0:
        return None
    return half_width / expected


def median_rel_half_width(frame: pl.DataFrame, column: str = REL_HALF_WIDTH) -> float:
    """The median of a relative half-width column, counting nulls (intervals that reach
    zero) as infinitely wide, so the median is never flattered by leaving them out.

    Returns infinity when at least half the cells cannot be told apart from zero.
    """
    if frame.height == 0:
        raise ValueError("no cells")
    values = sorted(math.inf if v is None else float(v) for v in frame[column].to_list())
    middle = len(values) // 2
    if len(values) % 2:
        return values[middle]
    low, high = values[middle - 1], values[middle]
    return math.inf if math.inf in (low, high) else (low + high) / 2.0


def percent(fraction: float | None, *, digits: int = 1) -> str:
    """A fraction as people read it: 0.0512 -> "5.1%"; None -> "n/a" (interval reaches 0).

    Example:
        >>> percent(0.0512), percent(None), percent(float("inf"))
        ('5.1%', 'n/a', '>= 100%')
    """
    if fraction is None:
        return "n/a"
    if math.isinf(fraction):
        return ">= 100%"
    return f"{fraction * 100:,.{digits}f}%"


def _with_expected(frame: pl.DataFrame, expected: Expected, keys: Sequence[str]) -> pl.DataFrame:
    if not isinstance(expected, pl.DataFrame):
        if isinstance(expected, bool) or not isinstance(expected, float | int):
            raise TypeError("expected must be a number or a frame with an 'expected' column")
        return frame.with_columns(pl.lit(float(expected), dtype=pl.Float64).alias(EXPECTED))
    missing = [c for c in (*keys, EXPECTED) if c not in expected.columns]
    if missing or not keys:
        raise ValueError(
            f"a frame of expected values needs the key columns {list(keys)} and an"
            f" {EXPECTED!r} column; missing {missing or ['the keys']}"
        )
    given = expected.select(*keys, pl.col(EXPECTED).cast(pl.Float64))
    return frame.join(given, on=list(keys), how="left", maintain_order="left")

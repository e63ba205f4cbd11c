"""NHS publication conventions on an answer: figures rounded to the nearest 5, small cells
suppressed. Post-processing only.

NHS statistical publications round counts (usually to the nearest 5) and suppress small
cells, so that a published table cannot be differenced back to a few people. A dpgate
answer is already differentially private: its protection comes from the noise, and these
conventions add none. They exist so a table can be published in the form readers and
publication rules expect. What they guarantee:

* No privacy cost and no effect on the release: they read only the noisy answer you
  already hold (no data, no server call), and the stored release keeps its unrounded,
  unbiased values; asking the query again returns those.
* Suppression looks at the noisy estimate, never at the true count (which nobody outside
  the server sees), so the `suppressed` flag reveals nothing the answer did not. It follows
  that a suppressed cell's true count may be above the threshold and a shown cell's below.
* Rounding: the value goes to the nearest multiple (halves away from zero, so negatives
  round like positives); the interval's ends go outwards (low down, high up), so the
  published interval still contains the computed one and keeps its coverage.
* Do arithmetic (sums, ratios) on the unrounded answer, then apply the conventions to the
  result: rounding before adding up biases totals.

Example:
    >>> frame = pl.DataFrame({"practice_code": ["A1", "A2", "A3"], "value": [1234, 6, -2],
    ...                       "ci_low": [1190, -38, -46], "ci_high": [1278, 50, 42]})
    >>> shown = nhs_conventions(frame, keys=["practice_code"], suppress_below=8)
    >>> shown.rows()[0], shown["suppressed"].to_list()
    (('A1', 1235, 1190, 1280, False), [False, True, True])
    >>> shown["value"].to_list()
    [1235, None, None]
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import polars as pl

DEFAULT_ROUND_TO = 5
"""NHS statistical publications round counts to the nearest 5."""
SUPPRESSED = "suppressed"
_INTERVAL = ("value", "ci_low", "ci_high")


def nhs_conventions(
    frame: pl.DataFrame,
    *,
    keys: Sequence[str] = (),
    round_to: int | None = DEFAULT_ROUND_TO,
    suppress_below: float | None = None,
) -> pl.DataFrame:
    """The cells rounded to multiples of `round_to`, with cells below a threshold hidden.

    Args:
        frame: cells with `value`, `ci_low` and `ci_high` (a release's `frame`, or sums).
        keys: the key columns to keep in front (e.g. the release's group-by).
        round_to: the multiple to round to (5 by default; None or 1: whole numbers).
        suppress_below: hide cells whose noisy `value` is below this (None: hide none).
            A negative noisy value is below any positive threshold.

    Returns:
        The keys, then `value`, `ci_low`, `ci_high` as integers (null where suppressed,
        and where the answer had no value), then `suppressed` (True where hidden).

    Raises:
        ValueError: `round_to` is not a positive whole number, or `suppress_below` is not
            a finite number.
    """
    step = _check_step(round_to)
    if suppress_below is not None and (
        isinstance(suppress_below, bool) or not math.isfinite(suppress_below)
    ):
        raise ValueError(f"suppress_below must be a finite number, got {suppress_below!r}")
    value, low, high = (pl.col(c).cast(pl.Float64) for c in _INTERVAL)
    hidden = (
        pl.lit(value=False)
        if suppress_below is None
        else (value < suppress_below).fill_null(value=False)
    )
    rounded = (
        (_nearest(value, step), "value"),
        ((low / step).floor() * step, "ci_low"),
        ((high / step).ceil() * step, "ci_high"),
    )
    return frame.select(
        *keys,
        *(
            pl.when(hidden).then(None).otherwise(expr).cast(pl.Int64).alias(name)
            for expr, name in rounded
        ),
        hidden.alias(SUPPRESSED),
    )


def _nearest(value: pl.Expr, step: int) -> pl.Expr:
    """Nearest multiple of `step`, halves away from zero (-2.5 -> -5 at step 5)."""
    magnitude = (value.abs() / step + 0.5).floor() * step
    return pl.when(value < 0).then(-magnitude).otherwise(magnitude)


def _check_step(round_to: int | None) -> int:
    if round_to is None:
        return 1
    if isinstance(round_to, bool) or not isinstance(round_to, int) or round_to < 1:
        raise ValueError(f"round_to must be a whole number of at least 1, got {round_to!r}")
    return round_to

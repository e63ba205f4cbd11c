"""Enforcing and verifying per-period bounds with the total bound K, in one pass.

`period_keep_mask` decides which rows each patient keeps from that patient's own rows, in
order of a per-row priority (the version's keyed-hash rank at publish, a random draw in the
synthetic generator). It applies, in this order, for each declared period: at most k rows
per (patient, period) (lowest priorities first), at most g periods per patient (the periods
whose best row has the lowest priority), at most c (practice, period) groups per patient
(likewise); then at most K rows per patient in total. Each step only removes rows, and
removing rows never raises a row count or a group count, so every bound holds at the end.
One patient's kept rows depend only on that patient's rows and priorities: one patient
changes the bounded table by at most what the bounds allow.

`bound_maxima` counts, over a version's files, the largest value of every bounded quantity;
`check_maxima` refuses a version whose files break any declared bound.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import polars as pl

from dpgate_server.store.period_bounds import PRACTICE_COLUMN, PeriodBounds

PATIENT = "patient_key"
PRIORITY = "__priority"
_ROW = "__row"


def period_keep_mask(
    frame: pl.DataFrame, max_contributions: int, bounds: PeriodBounds
) -> npt.NDArray[np.bool_]:
    """Which rows of `frame` to keep under K and `bounds`.

    `frame` holds columns patient_key, __priority (lower is kept first; equal priorities
    only for interchangeable rows), practice_code and each bounded period column, with all
    rows of each patient it mentions.
    """
    if max_contributions < 1:
        raise ValueError("max_contributions must be at least 1")
    rows = frame.select(PATIENT, PRIORITY, *_grouping_columns(bounds)).with_row_index(_ROW)
    rows = rows.sort(PATIENT, PRIORITY, maintain_order=True)
    for cap in bounds.caps:
        period = cap.period
        if cap.rows is not None:
            rows = rows.filter(pl.int_range(pl.len()).over(PATIENT, period) < cap.rows)
        if cap.periods is not None:
            rows = rows.filter(_group_rank((period,)) <= cap.periods)
        if cap.practice_periods is not None:
            rows = rows.filter(_group_rank((PRACTICE_COLUMN, period)) <= cap.practice_periods)
    rows = rows.filter(pl.int_range(pl.len()).over(PATIENT) < max_contributions)
    keep = np.zeros(frame.height, dtype=np.bool_)
    keep[rows.get_column(_ROW).to_numpy()] = True
    return keep


def _grouping_columns(bounds: PeriodBounds) -> list[str]:
    columns = [cap.period for cap in bounds.caps]
    if any(cap.practice_periods is not None for cap in bounds.caps):
        columns.insert(0, PRACTICE_COLUMN)
    return columns


def _group_rank(group: tuple[str, ...]) -> pl.Expr:
    """Each row's group's place among its patient's groups, by the group's best priority
    (ties between groups broken by the group's values, so ranks are distinct)."""
    best = pl.col(PRIORITY).min().over(PATIENT, *group)
    return pl.struct(best.alias("best"), *group).rank("dense").over(PATIENT)


@dataclass(frozen=True, slots=True)
class BoundMaxima:
    """The largest value, over all patients, of each bounded quantity in some files."""

    rows: int
    """Rows of one patient."""
    per_period: dict[str, int]
    """Rows of one patient in one period, by period column."""
    periods: dict[str, int]
    """Periods of one patient, by period column."""
    practice_periods: dict[str, int]
    """(practice_code, period) groups of one patient, by period column."""


def bound_maxima(paths: Sequence[Path], bounds: PeriodBounds, rows_per_pass: int) -> BoundMaxima:
    """Count the maxima over every file, in passes over slices of the patient-key space of
    about `rows_per_pass` rows each (memory bounded whatever the data's size)."""
    periods = [cap.period for cap in bounds.caps]
    empty = BoundMaxima(
        0, dict.fromkeys(periods, 0), dict.fromkeys(periods, 0), dict.fromkeys(periods, 0)
    )
    if not paths:
        return empty
    scan = pl.scan_parquet([str(p) for p in paths]).select(PATIENT, PRACTICE_COLUMN, *periods)
    total = int(scan.select(pl.len()).collect().item())
    passes = 1 << max(0, int(np.ceil(np.log2(max(1, total / max(1, rows_per_pass))))))
    worst = empty
    for part in range(passes):
        subset = scan if passes == 1 else scan.filter((pl.col(PATIENT) % passes).abs() == part)
        worst = _larger(worst, _maxima_of(subset, periods))
    return worst


def _maxima_of(scan: pl.LazyFrame, periods: Sequence[str]) -> BoundMaxima:
    rows = scan.group_by(PATIENT).len().select(pl.col("len").max()).collect(engine="streaming")
    per_period: dict[str, int] = {}
    period_count: dict[str, int] = {}
    practice_count: dict[str, int] = {}
    for period in periods:
        cells = scan.group_by(PATIENT, PRACTICE_COLUMN, period).len()
        by_period = cells.group_by(PATIENT, period).agg(pl.col("len").sum())
        per_period[period] = _item(by_period.select(pl.col("len").max()))
        period_count[period] = _item(by_period.group_by(PATIENT).len().select(pl.col("len").max()))
        practice_count[period] = _item(cells.group_by(PATIENT).len().select(pl.col("len").max()))
    return BoundMaxima(_value(rows.item()), per_period, period_count, practice_count)


def _item(frame: pl.LazyFrame) -> int:
    return _value(frame.collect(engine="streaming").item())


def _value(value: object) -> int:
    return 0 if value is None else int(value)  # type: ignore[call-overload]


def _larger(a: BoundMaxima, b: BoundMaxima) -> BoundMaxima:
    def most(x: dict[str, int], y: dict[str, int]) -> dict[str, int]:
        return {key: max(x.get(key, 0), y.get(key, 0)) for key in x.keys() | y.keys()}

    return BoundMaxima(
        max(a.rows, b.rows),
        most(a.per_period, b.per_period),
        most(a.periods, b.periods),
        most(a.practice_periods, b.practice_periods),
    )


def violations(maxima: BoundMaxima, max_contributions: int, bounds: PeriodBounds) -> list[str]:
    """Every declared bound the maxima break, in words (no row counts of the data beyond
    the offending maximum, which never leaves the server)."""
    found = []
    if maxima.rows > max_contributions:
        found.append(f"a patient has {maxima.rows} rows, above the bound of {max_contributions}")
    for cap in bounds.caps:
        p = cap.period
        if cap.rows is not None and maxima.per_period.get(p, 0) > cap.rows:
            found.append(
                f"a patient has {maxima.per_period[p]} rows in one {p}, above the bound of "
                f"{cap.rows}"
            )
        if cap.periods is not None and maxima.periods.get(p, 0) > cap.periods:
            found.append(
                f"a patient has rows in {maxima.periods[p]} {p}s, above the bound of {cap.periods}"
            )
        if cap.practice_periods is not None and maxima.practice_periods.get(p, 0) > (
            cap.practice_periods
        ):
            found.append(
                f"a patient has rows in {maxima.practice_periods[p]} (practice, {p}) groups, "
                f"above the bound of {cap.practice_periods}"
            )
    return found

"""The two plan templates (COUNT and SUM), written once, and their OpenDP measurement.

A plan starts from an *empty* frame with the private table's schema (OpenDP refuses a
plan built on the scan), applies the checked filters, then (per-query bounding only)
keeps k random rows per patient, then aggregates: `dp.len(signed=True)` for COUNT (the
unsigned default clamps at zero and biases small cells), or the column cast to Int64,
nulls filled, clamped to its public bounds and summed. A grouped plan left-joins the
aggregate onto the public key frame, so every public key gets a noised cell.

Nothing here creates or overwrites a column (OpenDP understates the cost of overwriting a
group column after truncation, opendp/opendp#2949): filters come first, then truncation,
then the aggregate.

Speed: on a version verified at publish the plan has no window over the privacy unit and
reads only the columns the answer needs (tests/unit/queries/test_plans.py asserts both), so
its aggregation is Polars' own group-by on the same files, as fast as plain Polars. What
it adds is OpenDP's noise, drawn one value at a time on one thread (~6.5 us a draw on an
idle core, OPENDP_POLARS.md section 12): each group's aggregate is noised, and the key join
fills absent keys from `fill_null(repeat(0, len()).noise())`, a column noised for *every*
key, absent or not. A dense grouped release therefore draws two noises per cell (~0.13 s at
10,070 cells): bench/engine.py's Q4 "one row per key" run, which is that noise alone,
accounts for the engine's CPU time over plain Polars. It is part of OpenDP's measurement
and stays there.
"""

from __future__ import annotations

import functools
from typing import Any, cast

import polars as pl
from opendp.context import domain_of, unit_of
from opendp.domains import with_margin
from opendp.extras.polars import Bound, Margin, dp_len
from opendp.measurements import make_private_lazyframe
from opendp.measures import max_divergence, zero_concentrated_divergence

from dpgate_server.queries.bounding import Bounding
from dpgate_server.queries.expressions import conjunction
from dpgate_server.queries.model import AggregateFunction, BoundingMethod
from dpgate_server.queries.validation import ValidatedQuery
from dpgate_server.store.metadata import DatasetMetadata
from dpgate_server.vocabulary.accounting import Accounting

VALUE_COLUMN = "__dpgate_value"
"""Name of the released aggregate in a plan's output (never a dataset column name)."""


def aggregate_expression(query: ValidatedQuery) -> pl.Expr:
    """COUNT: signed noisy row count. SUM: Int64 column, nulls as 0 clamped into bounds."""
    if query.aggregate is AggregateFunction.COUNT:
        return cast(pl.Expr, dp_len(signed=True)).alias(VALUE_COLUMN)
    assert query.column is not None
    assert query.clamp is not None
    low, high = query.clamp
    fill = min(max(0, low), high)  # unknown values add nothing when 0 is in the bounds
    column: Any = pl.col(query.column).cast(pl.Int64).fill_null(fill)
    return cast(pl.Expr, column.dp.sum((low, high))).alias(VALUE_COLUMN)


def truncation_filter(privacy_unit: str, max_contributions: int) -> pl.Expr:
    """Keep `max_contributions` random rows of each patient (rows after the filters)."""
    return pl.int_range(pl.len()).shuffle().over(privacy_unit) < max_contributions


def build_plan(
    schema: pl.Schema,
    query: ValidatedQuery,
    bounding: Bounding,
    privacy_unit: str,
    keys: pl.LazyFrame | None,
    count_column: str | None = None,
) -> pl.LazyFrame:
    """The query's plan: filters, then truncation (per-query only), then the aggregate.

    `count_column`: the cheapest column for an unfiltered total count to read on a bounded
    version (queries/count_column.py); the privacy unit when None.
    """
    frame = pl.LazyFrame(schema=schema)
    condition = conjunction(query.filters)
    if condition is not None:
        frame = frame.filter(condition)
    if bounding.method is BoundingMethod.PER_QUERY:
        frame = frame.filter(truncation_filter(privacy_unit, bounding.max_contributions))
    aggregate = aggregate_expression(query)
    if not query.group_by:
        if query.aggregate is AggregateFunction.COUNT:
            # A bare frame length reads every column (no projection to push down);
            # keeping one column first makes a total count ~20x faster. Rows are unchanged,
            # so keep one the plan reads anyway, or else the cheapest.
            frame = frame.select(_column_to_count(query, bounding, privacy_unit, count_column))
        return frame.select(aggregate)
    if keys is None:
        raise ValueError("a grouped plan needs its public key frame")
    grouped = frame.group_by(list(query.group_by)).agg(aggregate)
    return keys.join(grouped, on=list(query.group_by), how="left", nulls_equal=True)


def _column_to_count(
    query: ValidatedQuery, bounding: Bounding, privacy_unit: str, cheapest: str | None
) -> str:
    if bounding.method is BoundingMethod.PER_QUERY:
        return privacy_unit  # the truncation window reads it already
    if query.filters:
        return query.filters[0].column  # the filter reads it already
    return privacy_unit if cheapest is None else cheapest


def privacy_unit_of(bounding: Bounding, privacy_unit: str) -> tuple[Any, Any]:
    """OpenDP metric and d_in: k rows (row-level unit), the version's verified bounds (the
    row-level unit with per-period `Bound`s), or one patient (identifier unit)."""
    if bounding.method is BoundingMethod.PUBLISH_TIME and bounding.period_bounds:
        return unit_of(contributions=opendp_bounds(bounding))
    if bounding.method is BoundingMethod.PUBLISH_TIME:
        metric, _ = unit_of(contributions=bounding.max_contributions)
    else:
        metric, _ = unit_of(contributions=1, identifier=privacy_unit)
    return metric, bounding.d_in


def opendp_bounds(bounding: Bounding) -> list[Any]:
    """The version's verified bounds as OpenDP `Bound`s (the total K first). Only bounds
    the publish enforced and verified are ever here (queries.bounding.choose_bounding)."""
    return [
        Bound(by=list(b.by), per_group=b.per_group, num_groups=b.num_groups)
        for b in bounding.period_bounds
    ]


def opendp_d_in(bounding: Bounding, privacy_unit: str) -> Any:
    """The d_in to give the measurement's `map` and `check`."""
    return privacy_unit_of(bounding, privacy_unit)[1]


def make_measurement(
    scan: pl.LazyFrame,
    metadata: DatasetMetadata,
    bounding: Bounding,
    plan: pl.LazyFrame,
    global_scale: float,
) -> Any:
    """The OpenDP measurement of `plan` on data shaped like `scan` (schema only is read).

    The row-count margin is the metadata's public ceiling (a policy constant, required for
    integer sums' overflow check); nothing in the domain comes from the rows.
    """
    domain = _domain(tuple(scan.collect_schema().items()), metadata.max_rows)
    metric, _ = privacy_unit_of(bounding, metadata.privacy_unit)
    measure = (
        max_divergence()
        if metadata.accounting is Accounting.PURE_DP
        else zero_concentrated_divergence()
    )
    return make_private_lazyframe(domain, metric, measure, plan, global_scale=global_scale)


@functools.lru_cache(maxsize=64)
def _domain(schema: tuple[tuple[str, pl.DataType], ...], max_rows: int) -> Any:
    """OpenDP's frame domain for a schema and row ceiling: built once per shape.

    Building it makes one FFI series domain per column (~17 ms for 22 columns, a fifth
    of a total count's engine time); it depends only on these public arguments and OpenDP
    copies it into each measurement, so every query on a version shares one.
    """
    empty = pl.LazyFrame(schema=dict(schema))
    return with_margin(domain_of(empty, infer=True), Margin(by=[], max_length=max_rows))

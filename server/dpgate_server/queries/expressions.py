"""Polars expressions for checked filters: the only way a filter reaches a plan.

Only `CanonicalFilter`s are accepted, whose column names come from the metadata and whose
values were checked against the column's public set or range. The rewrites avoid what
OpenDP rejects (OPENDP_POLARS.md section 6): `in` becomes an OR of equalities (`is_in` is
refused), and a date is compared as its day number (`.cast(pl.Int32)`, days since
1970-01-01) because date literals are refused.
"""

from __future__ import annotations

import datetime as dt
import functools
import operator
from collections.abc import Callable

import polars as pl

from dpgate_server.queries.model import CanonicalFilter, FilterOp
from dpgate_server.store.metadata import KeyValue

_EPOCH = dt.date(1970, 1, 1)

_COMPARE: dict[FilterOp, Callable[[pl.Expr, pl.Expr], pl.Expr]] = {
    FilterOp.NE: operator.ne,
    FilterOp.LT: operator.lt,
    FilterOp.LE: operator.le,
    FilterOp.GT: operator.gt,
    FilterOp.GE: operator.ge,
}


def filter_expression(item: CanonicalFilter) -> pl.Expr:
    """The boolean expression of one checked filter."""
    is_date = isinstance(item.values[0], dt.date)
    column = pl.col(item.column).cast(pl.Int32) if is_date else pl.col(item.column)
    literals = [_literal(v) for v in item.values]
    if item.op is FilterOp.IN:
        return functools.reduce(operator.or_, (column == lit for lit in literals))
    return _COMPARE[item.op](column, literals[0])


def conjunction(filters: tuple[CanonicalFilter, ...]) -> pl.Expr | None:
    """AND of the filters, or None when there are none."""
    if not filters:
        return None
    return functools.reduce(operator.and_, (filter_expression(f) for f in filters))


def _literal(value: KeyValue) -> pl.Expr:
    if isinstance(value, dt.date):
        return pl.lit((value - _EPOCH).days, dtype=pl.Int32)
    return pl.lit(value)

"""A small, typed, immutable query builder: no protobuf in a planner's code.

Example:
    >>> from dpgate import count
    >>> q = count("gp_appointments").where(status="DNA").by("practice_code", "week").epsilon(0.5)
    >>> q.group_by
    ('practice_code', 'week')
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, replace
from decimal import Decimal

from dpgate._proto.dpgate.v1 import query_pb2, types_pb2
from dpgate._types import KeyValue

_OPERATORS = {
    "=": query_pb2.FILTER_OPERATOR_EQ,
    "==": query_pb2.FILTER_OPERATOR_EQ,
    "!=": query_pb2.FILTER_OPERATOR_NE,
    "<": query_pb2.FILTER_OPERATOR_LT,
    "<=": query_pb2.FILTER_OPERATOR_LE,
    ">": query_pb2.FILTER_OPERATOR_GT,
    ">=": query_pb2.FILTER_OPERATOR_GE,
    "in": query_pb2.FILTER_OPERATOR_IN,
}


@dataclass(frozen=True, slots=True)
class Condition:
    """`column op value(s)`; a query's conditions all hold (AND)."""

    column: str
    op: str
    values: tuple[KeyValue, ...]


@dataclass(frozen=True, slots=True)
class QuerySpec:
    """A count or sum question; every method returns a new spec.

    The server checks everything (columns, values, spend); the builder only refuses what
    could never be sent, such as an unknown operator.
    """

    dataset_id: str
    aggregate: str
    column: str = ""
    conditions: tuple[Condition, ...] = ()
    group_by: tuple[str, ...] = ()
    spend_kind: str = ""
    spend_value: float = 0.0
    confidence_level: float = 0.0
    max_contributions: int = 0

    def where(
        self, column: str | None = None, op: str = "=", value: object = None, **equal: object
    ) -> QuerySpec:
        """Add conditions: `.where("lead_time_days", ">=", 8)` or `.where(status="DNA")`."""
        added = []
        if column is not None:
            if op not in _OPERATORS:
                raise ValueError(f"unknown operator {op!r}; use one of {sorted(_OPERATORS)}")
            values: tuple[object, ...] = (value,)
            if op == "in" and isinstance(value, Iterable) and not isinstance(value, str):
                values = tuple(value)
            added.append(Condition(column, op, tuple(_key(v) for v in values)))
        added.extend(Condition(name, "=", (_key(v),)) for name, v in equal.items())
        return replace(self, conditions=self.conditions + tuple(added))

    def where_in(self, column: str, values: Iterable[object]) -> QuerySpec:
        """Add `column in values`."""
        return replace(
            self,
            conditions=(*self.conditions, Condition(column, "in", tuple(_key(v) for v in values))),
        )

    def by(self, *columns: str) -> QuerySpec:
        """Group by public key columns: every key appears in the answer."""
        return replace(self, group_by=self.group_by + columns)

    def epsilon(self, value: float | Decimal) -> QuerySpec:
        """Spend `value` epsilon (pure-DP datasets)."""
        return replace(self, spend_kind="epsilon", spend_value=float(value))

    def rho(self, value: float | Decimal) -> QuerySpec:
        """Spend `value` rho (zCDP datasets)."""
        return replace(self, spend_kind="rho", spend_value=float(value))

    def accuracy(self, half_width: float) -> QuerySpec:
        """Spend the least that gives every cell an interval of +/- `half_width`."""
        return replace(self, spend_kind="target_half_width", spend_value=float(half_width))

    def confidence(self, level: float) -> QuerySpec:
        """Interval confidence level (default 0.95); changing it later is free."""
        return replace(self, confidence_level=level)

    def contributions(self, max_contributions: int) -> QuerySpec:
        """A per-query bound below the dataset's, to pay less at the price of more truncation."""
        return replace(self, max_contributions=max_contributions)

    def to_proto(self) -> query_pb2.Query:
        """The wire form (internal: used by the client)."""
        function = (
            query_pb2.AGGREGATE_FUNCTION_COUNT
            if self.aggregate == "count"
            else query_pb2.AGGREGATE_FUNCTION_SUM
        )
        message = query_pb2.Query(
            dataset_id=self.dataset_id,
            aggregate=query_pb2.Aggregate(function=function, column=self.column),
            filters=[
                query_pb2.Filter(
                    column=c.column,
                    operator=_OPERATORS[c.op],
                    values=[_key_to_proto(v) for v in c.values],
                )
                for c in self.conditions
            ],
            group_by=list(self.group_by),
            confidence_level=self.confidence_level,
            max_contributions=self.max_contributions,
        )
        if self.spend_kind:
            setattr(message, self.spend_kind, self.spend_value)
        return message


def count(dataset_id: str) -> QuerySpec:
    """A COUNT of appointments."""
    return QuerySpec(dataset_id=dataset_id, aggregate="count")


def total(dataset_id: str, column: str) -> QuerySpec:
    """A SUM of `column`, each value clamped to the column's public bounds."""
    return QuerySpec(dataset_id=dataset_id, aggregate="sum", column=column)


def _key(value: object) -> KeyValue:
    if isinstance(value, bool) or not isinstance(value, str | int | dt.date):
        raise TypeError(f"a condition value must be a str, int or date, not {value!r}")
    return value


def _key_to_proto(value: KeyValue) -> types_pb2.KeyValue:
    if isinstance(value, str):
        return types_pb2.KeyValue(string_value=value)
    if isinstance(value, dt.date):
        return types_pb2.KeyValue(date_value=value.isoformat())
    return types_pb2.KeyValue(int_value=value)

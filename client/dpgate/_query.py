"""A small, typed, immutable query builder: no protobuf in a planner's code.

A spend is kept as the exact Decimal the planner wrote (a float by its shortest repr, so
0.1 is Decimal("0.1")) and sent exactly, as integers of 1e-9 (`dpgate.v1.Spend`).

Example:
    >>> from dpgate import count
    >>> q = count("gp_appointments").where(status="DNA").by("practice_code", "week").epsilon(0.5)
    >>> q.group_by, q.spend
    (('practice_code', 'week'), Decimal('0.5'))
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, replace
from decimal import Decimal

from dpgate._types import KeyValue
from dpgate_proto.v1 import query_pb2, types_pb2
from dpgate_shared.confidence import DEFAULT_CONFIDENCE_LEVEL, check_confidence_level
from dpgate_shared.units import SMALLEST, Amount, plain, spend_to_units, to_decimal

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
_ACCOUNTING_OF = {"epsilon": types_pb2.ACCOUNTING_PURE_DP, "rho": types_pb2.ACCOUNTING_ZCDP}
_INT64_MAX = 2**63 - 1


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
    could never be sent, such as an unknown operator, a spend that is not a number or is
    finer than 0.000000001, or a confidence level outside (0, 1).

    Attributes:
        measure: "epsilon" or "rho" when a spend is set, else "".
        spend: the exact spend, or None (then `target_half_width`, if any, decides it).
        target_half_width: the interval +/- wanted on every cell, instead of a spend.
    """

    dataset_id: str
    aggregate: str
    column: str = ""
    conditions: tuple[Condition, ...] = ()
    group_by: tuple[str, ...] = ()
    measure: str = ""
    spend: Decimal | None = None
    target_half_width: float | None = None
    confidence_level: float = DEFAULT_CONFIDENCE_LEVEL
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

    def epsilon(self, value: Amount) -> QuerySpec:
        """Spend `value` epsilon (pure-DP datasets): Decimal("0.5"), "0.5", 0.5 or 1."""
        return self._spend("epsilon", value)

    def rho(self, value: Amount) -> QuerySpec:
        """Spend `value` rho (zCDP datasets): Decimal("0.05"), "0.05", 0.05 or 1."""
        return self._spend("rho", value)

    def accuracy(self, half_width: float) -> QuerySpec:
        """Spend the least that gives every cell an interval of +/- `half_width`."""
        return replace(self, measure="", spend=None, target_half_width=float(half_width))

    def confidence(self, level: float) -> QuerySpec:
        """Interval confidence level (default 0.95); changing it later is free.

        Raises:
            ValueError: `level` is not strictly between 0 and 1.
        """
        return replace(self, confidence_level=check_confidence_level(level))

    def contributions(self, max_contributions: int) -> QuerySpec:
        """A per-query bound below the dataset's, to pay less at the price of more truncation."""
        return replace(self, max_contributions=max_contributions)

    def _spend(self, measure: str, value: Amount) -> QuerySpec:
        exact = to_decimal(value, measure)
        if 0 < exact < Decimal(SMALLEST):
            raise ValueError(
                f"{measure} {plain(exact)} is below the smallest amount, {SMALLEST}; "
                f"ask for at least {SMALLEST}"
            )
        if abs(spend_to_units(exact)) > _INT64_MAX:
            raise ValueError(f"{measure} {plain(exact)} is too large to send")
        return replace(self, measure=measure, spend=exact, target_half_width=None)

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
        if self.spend is not None:
            message.amount.CopyFrom(
                types_pb2.Spend(
                    accounting=_ACCOUNTING_OF[self.measure], nano_units=spend_to_units(self.spend)
                )
            )
        elif self.target_half_width is not None:
            message.target_half_width = self.target_half_width
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

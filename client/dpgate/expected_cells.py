"""A default for the cell value a planner expects, from public practice list sizes.

A question set's split (`Client.preview_set(..., total_epsilon=...)`) gives every query the
same interval as a fraction of the cell value the planner expects of it. When the planner
gives none, the public `practices` table (each practice's registered list size) says how
many people a typical cell covers, and that is the default here:

- the practices a query covers are those its conditions on practice columns
  (`practice_code`, `pcn_code`, `icb_code`, ...) keep;
- grouped by a practice column (per practice, per PCN, ...), a typical cell covers the
  median of those groups' summed list sizes; otherwise it covers all the practices kept;
- that population is spread evenly over the keys of its other group-by columns (per week:
  divided by the number of weeks kept).

The split depends only on the ratios of these values, so it equalises relative accuracy
exactly when appointments per registered patient are alike across the queries' cells. It
ignores the share of appointments a condition on another column keeps (`status=DNA` keeps
about 5%), and gives nothing for a SUM (list sizes count people, not minutes): give your
own value for those. Public metadata only: reading the table costs nothing.

Example:
    >>> import polars as pl
    >>> from dpgate import count
    >>> practices = pl.DataFrame(
    ...     {"practice_code": ["A1", "A2", "A3"], "icb_code": ["Q1", "Q1", "Q2"],
    ...      "list_size": [4_000, 8_000, 10_000]}
    ... )
    >>> expected_cell_value(count("gp").by("practice_code"), practices, {})
    8000.0
    >>> expected_cell_value(count("gp").where(icb_code="Q1").by("month"), practices,
    ...                     {"month": tuple(range(12))})
    1000.0
"""

from __future__ import annotations

import operator
import statistics
from collections.abc import Mapping, Sequence

import polars as pl

from dpgate._query import Condition, QuerySpec
from dpgate._types import KeyValue

LIST_SIZE_COLUMN = "list_size"
"""The column of the public `practices` table holding each practice's registered patients."""


def expected_cell_value(
    query: QuerySpec,
    practices: pl.DataFrame,
    key_values: Mapping[str, Sequence[KeyValue]],
) -> float | None:
    """The registered population of a typical cell of a COUNT `query` (see the module).

    Args:
        query: the question.
        practices: the public `practices` table (`client.public_table(dataset, "practices")`).
        key_values: each group-by column's public values (`ColumnInfo.values`).

    Returns:
        The default expected cell value, or None when there is none: a SUM, no list sizes,
        a group-by column without public values, or no practice or key kept.
    """
    if query.aggregate.upper() != "COUNT" or LIST_SIZE_COLUMN not in practices.columns:
        return None
    on_practices = set(practices.columns) - {LIST_SIZE_COLUMN}
    kept = practices
    for condition in query.conditions:
        if condition.column in on_practices:
            kept = kept.filter(_expression(condition))
    if kept.height == 0:
        return None
    by_practices = [c for c in query.group_by if c in on_practices]
    sizes = pl.col(LIST_SIZE_COLUMN).cast(pl.Float64)
    if by_practices:
        groups = kept.group_by(by_practices).agg(sizes.sum())
        population = float(statistics.median(groups.get_column(LIST_SIZE_COLUMN).to_list()))
    else:
        population = float(kept.select(sizes.sum()).item())
    cells_per_population = 1
    for column in query.group_by:
        if column in on_practices:
            continue
        values = [
            v
            for v in key_values.get(column, ())
            if all(_holds(c, v) for c in query.conditions if c.column == column)
        ]
        if not values:
            return None
        cells_per_population *= len(values)
    value = population / cells_per_population
    return value if value > 0 else None


_COMPARED = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}


def _expression(condition: Condition) -> pl.Expr:
    """The condition on the practices table."""
    column = pl.col(condition.column)
    if condition.op in {"=", "in"}:
        return column.is_in(list(condition.values))
    if condition.op == "!=":
        return ~column.is_in(list(condition.values))
    compared: pl.Expr = _COMPARED[condition.op](column, condition.values[0])
    return compared


def _holds(condition: Condition, value: KeyValue) -> bool:
    """Whether a public key `value` of the condition's column satisfies it."""
    if condition.op in {"=", "in"}:
        return value in condition.values
    if condition.op == "!=":
        return value not in condition.values
    try:
        return bool(_COMPARED[condition.op](value, condition.values[0]))
    except TypeError:  # a value of another type: the server refuses the query anyway
        return True

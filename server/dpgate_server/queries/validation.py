"""Check a requester's query against the dataset's public metadata, before any data is read.

Everything a requester writes is either refused here with an `InvalidQuery` (a reason
code, the field, and a message saying what to change) or turned into checked values: a
column name that exists and may be used that way, a literal of the column's type inside
its public set or range, a spend in exact ledger units. Plan templates only ever see
these checked values, so no requester text reaches Polars except as such literals.

Checks that need a dataset version (how many cells the public key set has, whether a
target accuracy is reachable at the version's bound) are made in `engine.prepare`.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

from dpgate_server.queries.accuracy import checked_confidence_level
from dpgate_server.queries.errors import InvalidQuery
from dpgate_server.queries.limits import QueryLimits
from dpgate_server.queries.model import (
    AggregateFunction,
    CanonicalFilter,
    FilterOp,
    Query,
    SpendMeasure,
    value_to_json,
)
from dpgate_server.store.metadata import (
    ColumnKind,
    ColumnSpec,
    DatasetMetadata,
    KeyValue,
    Visibility,
)
from dpgate_server.vocabulary.accounting import Accounting
from dpgate_server.vocabulary.errors import DatasetNotFoundError, ErrorReason
from dpgate_shared.units import SMALLEST, plain, spend_to_units, to_decimal

_ORDERING_OPS = frozenset({FilterOp.LT, FilterOp.LE, FilterOp.GT, FilterOp.GE})
_EXAMPLES = 5
"""How many allowed values or columns a message lists before "...": enough to correct a typo."""


@dataclass(frozen=True, slots=True)
class ValidatedQuery:
    """A query whose every part was checked against the metadata; version-independent.

    Attributes:
        dataset_id: the dataset (equal to the metadata's).
        aggregate: COUNT or SUM.
        column: the SUM column, else None.
        clamp: the SUM column's public bounds (each row is clamped to them), else None.
        sensitivity: how much one row can move the aggregate: 1 for COUNT,
            max(|low|, |high|) for SUM.
        filters: canonical filters (sorted, de-duplicated, `=` as a one-value `in`).
        group_by: group-by columns, sorted.
        spend_units: requested spend in ledger units (rounded down), or None.
        target_half_width: requested half-width instead of a spend, or None.
        confidence_level: interval level in (0, 1).
        max_contributions: the bound asked for (the dataset's when the query gave none).
    """

    dataset_id: str
    accounting: Accounting
    aggregate: AggregateFunction
    column: str | None
    clamp: tuple[int, int] | None
    sensitivity: int
    filters: tuple[CanonicalFilter, ...]
    group_by: tuple[str, ...]
    spend_units: int | None
    target_half_width: float | None
    confidence_level: float
    max_contributions: int


def validate(
    metadata: DatasetMetadata, query: Query, limits: QueryLimits | None = None
) -> ValidatedQuery:
    """Check `query` against `metadata` and `limits`; raise InvalidQuery on the first problem.

    Example:
        >>> import datetime as dt
        >>> from dpgate_server.queries.model import Aggregate, Query, Spend
        >>> from dpgate_server.store.metadata import (
        ...     Accounting, ColumnKind, ColumnSpec, DatasetMetadata, Visibility)
        >>> patient = ColumnSpec("patient", ColumnKind.INTEGER, Visibility.PRIVATE, "who")
        >>> mode = ColumnSpec("mode", ColumnKind.STRING, Visibility.PUBLIC, "how",
        ...     groupable=True, filterable=True, values=("Home", "Phone"))
        >>> visits = DatasetMetadata("visits", "Visits", "one row per visit", "patient", 4,
        ...     Accounting.PURE_DP, 10_000, dt.date(2025, 1, 1), dt.date(2025, 12, 31),
        ...     (patient, mode))
        >>> by_mode = Query("visits", Aggregate.count(), group_by=("mode",), spend=Spend.epsilon(1))
        >>> validate(visits, by_mode).spend_units
        1000000000
        >>> validate(visits, Query("visits", Aggregate.count(), group_by=("patient",),
        ...     spend=Spend.epsilon(1)))
        Traceback (most recent call last):
        ...
        dpgate_server.queries.errors.InvalidQuery: PRIVATE_COLUMN (group_by[0]): ...
    """
    limits = QueryLimits() if limits is None else limits
    if query.dataset_id != metadata.dataset_id:
        raise DatasetNotFoundError(query.dataset_id)
    aggregate, column, clamp, sensitivity = _check_aggregate(metadata, query)
    group_by = _check_group_by(metadata, query.group_by)
    filters = _check_filters(metadata, query.filters, limits)
    spend_units, target = _check_spend(metadata, query, limits)
    return ValidatedQuery(
        dataset_id=metadata.dataset_id,
        accounting=metadata.accounting,
        aggregate=aggregate,
        column=column,
        clamp=clamp,
        sensitivity=sensitivity,
        filters=filters,
        group_by=group_by,
        spend_units=spend_units,
        target_half_width=target,
        confidence_level=_check_confidence(query.confidence_level),
        max_contributions=_check_contributions(metadata, query.max_contributions),
    )


def _check_aggregate(
    metadata: DatasetMetadata, query: Query
) -> tuple[AggregateFunction, str | None, tuple[int, int] | None, int]:
    function = query.aggregate.function
    column = query.aggregate.column
    if function == AggregateFunction.COUNT:
        if column is not None:
            raise InvalidQuery(
                ErrorReason.BAD_AGGREGATE,
                "aggregate.column",
                "COUNT counts rows and takes no column; drop the column, or use SUM(column).",
            )
        return AggregateFunction.COUNT, None, None, 1
    if function != AggregateFunction.SUM:
        raise InvalidQuery(
            ErrorReason.BAD_AGGREGATE,
            "aggregate.function",
            f"unknown aggregate {function!r}; use COUNT or SUM.",
        )
    summable = _names(metadata, lambda c: c.summable)
    if not isinstance(column, str):
        raise InvalidQuery(
            ErrorReason.NOT_SUMMABLE,
            "aggregate.column",
            f"SUM needs a column; summable columns are: {summable}.",
        )
    spec = _column(metadata, column, "aggregate.column")
    if not spec.summable or spec.bounds is None:
        raise InvalidQuery(
            ErrorReason.NOT_SUMMABLE,
            "aggregate.column",
            f"column {column!r} cannot be summed (only bounded integer columns can); "
            f"summable columns are: {summable}.",
        )
    low, high = spec.bounds
    return AggregateFunction.SUM, column, (low, high), max(abs(low), abs(high), 1)


def _check_group_by(metadata: DatasetMetadata, group_by: tuple[str, ...]) -> tuple[str, ...]:
    seen: set[str] = set()
    for index, name in enumerate(group_by):
        where = f"group_by[{index}]"
        spec = _column(metadata, name, where)
        if spec.visibility is Visibility.PRIVATE:
            raise InvalidQuery(
                ErrorReason.PRIVATE_COLUMN,
                where,
                f"column {spec.name!r} is private and can never be grouped on; group by one "
                f"of: {_names(metadata, lambda c: c.groupable)}.",
            )
        if not spec.groupable:
            raise InvalidQuery(
                ErrorReason.NOT_GROUPABLE,
                where,
                f"column {spec.name!r} has no public key set to group on; group by one of: "
                f"{_names(metadata, lambda c: c.groupable)}, or filter on it instead.",
            )
        if spec.name in seen:
            raise InvalidQuery(
                ErrorReason.DUPLICATE_COLUMN,
                where,
                f"column {spec.name!r} appears twice in the group-by; list each column once.",
            )
        seen.add(spec.name)
    return tuple(sorted(seen))


def _check_filters(
    metadata: DatasetMetadata, filters: tuple[object, ...], limits: QueryLimits
) -> tuple[CanonicalFilter, ...]:
    if len(filters) > limits.max_filters:
        raise InvalidQuery(
            ErrorReason.TOO_MANY_FILTERS,
            "filters",
            f"{len(filters)} filters, at most {limits.max_filters} are allowed; combine "
            "equalities on one column into a single `in` filter, or drop some.",
        )
    checked: dict[str, CanonicalFilter] = {}
    for index, item in enumerate(filters):
        canonical = _check_filter(metadata, item, index, limits)
        checked[_filter_sort_key(canonical)] = canonical
    return tuple(checked[k] for k in sorted(checked))


def _check_filter(
    metadata: DatasetMetadata, item: object, index: int, limits: QueryLimits
) -> CanonicalFilter:
    where = f"filters[{index}]"
    column = getattr(item, "column", None)
    op_text = getattr(item, "op", None)
    raw_values = getattr(item, "values", None)
    spec = _column(metadata, column, f"{where}.column")
    if spec.visibility is Visibility.PRIVATE:
        raise InvalidQuery(
            ErrorReason.PRIVATE_COLUMN,
            f"{where}.column",
            f"column {spec.name!r} is private and can never be filtered on; filter on one "
            f"of: {_names(metadata, _can_filter)}.",
        )
    if not _can_filter(spec):
        raise InvalidQuery(
            ErrorReason.NOT_FILTERABLE,
            f"{where}.column",
            f"column {spec.name!r} cannot be filtered on; filter on one of: "
            f"{_names(metadata, _can_filter)}.",
        )
    op = _check_op(spec, op_text, f"{where}.op")
    if not isinstance(raw_values, tuple | list):
        raise InvalidQuery(
            ErrorReason.BAD_VALUE, f"{where}.values", "filter values must be a list of values."
        )
    if op is FilterOp.IN:
        if len(raw_values) > limits.max_in_values:
            raise InvalidQuery(
                ErrorReason.TOO_MANY_VALUES,
                f"{where}.values",
                f"{len(raw_values)} values in `in`, at most {limits.max_in_values} are "
                "allowed; group by the column instead, or split the query.",
            )
        if not raw_values:
            raise InvalidQuery(
                ErrorReason.BAD_VALUE,
                f"{where}.values",
                "`in` needs at least one value; list the values to keep.",
            )
    elif len(raw_values) != 1:
        raise InvalidQuery(
            ErrorReason.BAD_VALUE,
            f"{where}.values",
            f"operator {op.value!r} takes exactly one value, got {len(raw_values)}; use `in` "
            "for a list.",
        )
    allowed = None if spec.values is None else frozenset(spec.values)
    values = [
        _check_value(
            metadata,
            spec=spec,
            allowed=allowed,
            op=op,
            value=value,
            where=f"{where}.values[{i}]",
        )
        for i, value in enumerate(raw_values)
    ]
    if op in (FilterOp.EQ, FilterOp.IN):
        return CanonicalFilter(spec.name, FilterOp.IN, tuple(sorted(set(values))))
    return CanonicalFilter(spec.name, op, (values[0],))


def _check_op(spec: ColumnSpec, op_text: object, where: str) -> FilterOp:
    try:
        op = FilterOp(op_text if isinstance(op_text, str) else "")
    except ValueError:
        raise InvalidQuery(
            ErrorReason.BAD_OPERATOR,
            where,
            f"unknown operator {op_text!r}; use one of: {', '.join(o.value for o in FilterOp)}.",
        ) from None
    if op in _ORDERING_OPS and spec.kind is ColumnKind.STRING:
        raise InvalidQuery(
            ErrorReason.BAD_OPERATOR,
            where,
            f"column {spec.name!r} holds categories, which have no order; use =, != or in.",
        )
    return op


def _check_value(
    metadata: DatasetMetadata,
    *,
    spec: ColumnSpec,
    allowed: frozenset[KeyValue] | None,
    op: FilterOp,
    value: object,
    where: str,
) -> KeyValue:
    typed = _typed(spec, value, where)
    if spec.values is not None and allowed is not None:
        if op in _ORDERING_OPS:
            low, high = min(spec.values), max(spec.values)
            _check_range(spec, typed, low, high, where)
        elif typed not in allowed:
            raise InvalidQuery(
                ErrorReason.BAD_VALUE,
                where,
                f"{value_to_json(typed)!r} is not a public value of {spec.name!r}; use one of: "
                f"{_examples(spec.values)}.",
            )
        return typed
    if spec.kind is ColumnKind.DATE:
        _check_range(spec, typed, metadata.period_start, metadata.period_end, where)
    elif spec.bounds is not None:
        _check_range(spec, typed, spec.bounds[0], spec.bounds[1], where)
    return typed


def _typed(spec: ColumnSpec, value: object, where: str) -> KeyValue:
    if spec.kind is ColumnKind.STRING and isinstance(value, str):
        return value
    if spec.kind is ColumnKind.INTEGER and isinstance(value, int) and not isinstance(value, bool):
        return value
    if spec.kind is ColumnKind.DATE:
        if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
            return value
        if isinstance(value, str):
            try:
                return dt.date.fromisoformat(value)
            except ValueError:
                pass
    expected = {
        ColumnKind.STRING: "a text label",
        ColumnKind.INTEGER: "a whole number",
        ColumnKind.DATE: "a date written YYYY-MM-DD",
    }[spec.kind]
    raise InvalidQuery(
        ErrorReason.BAD_VALUE,
        where,
        f"{_short(value)} is not {expected}; column {spec.name!r} needs {expected}.",
    )


def _check_range(spec: ColumnSpec, value: KeyValue, low: object, high: object, where: str) -> None:
    if not low <= value <= high:  # type: ignore[operator]
        raise InvalidQuery(
            ErrorReason.BAD_VALUE,
            where,
            f"{value_to_json(value)!r} is outside the public range of {spec.name!r}, "
            f"{value_to_json(low)!r} to {value_to_json(high)!r} "  # type: ignore[arg-type]
            "inclusive; use a value in that range.",
        )


def _check_spend(
    metadata: DatasetMetadata, query: Query, limits: QueryLimits
) -> tuple[int | None, float | None]:
    expected = (
        SpendMeasure.EPSILON if metadata.accounting is Accounting.PURE_DP else SpendMeasure.RHO
    )
    if (query.spend is None) == (query.target_half_width is None):
        raise InvalidQuery(
            ErrorReason.BAD_SPEND,
            expected.value,
            f"give either {expected.value} or a target accuracy (half-width), exactly one.",
        )
    if query.spend is None:
        return None, _check_target(query.target_half_width)
    measure = query.spend.measure
    if measure not in (SpendMeasure.EPSILON, SpendMeasure.RHO):
        raise InvalidQuery(
            ErrorReason.BAD_SPEND,
            "spend.measure",
            f"unknown spend measure {measure!r}; this dataset takes {expected.value}.",
        )
    if measure != expected:
        raise InvalidQuery(
            ErrorReason.WRONG_ACCOUNTING,
            str(measure),
            f"dataset {metadata.dataset_id!r} is accounted in {expected.value} "
            f"({metadata.accounting.value}); give {expected.value} instead of {measure}.",
        )
    return _spend_units(expected, query.spend.value, limits, metadata.accounting), None


def _spend_units(
    measure: SpendMeasure, value: object, limits: QueryLimits, accounting: Accounting
) -> int:
    reason = ErrorReason.BAD_EPSILON if measure is SpendMeasure.EPSILON else ErrorReason.BAD_RHO
    ceiling = plain(limits.max_epsilon if accounting is Accounting.PURE_DP else limits.max_rho)
    exact = _as_decimal(value)
    if exact is None or exact <= 0:
        shown = plain(exact) if exact is not None else _short(value)
        raise InvalidQuery(
            reason,
            measure.value,
            f"{measure.value} must be a finite number above 0, got {shown}; "
            f"use a value such as 0.1 (at most {ceiling}).",
        )
    if exact > Decimal(ceiling):
        raise InvalidQuery(
            reason,
            measure.value,
            f"{measure.value} {plain(exact)} is above the per-query maximum {ceiling}; ask for "
            f"at most {ceiling}, or split the question.",
        )
    units = spend_to_units(exact)  # rounded down: never charged above what was asked
    if units < 1:
        raise InvalidQuery(
            reason,
            measure.value,
            f"{measure.value} {plain(exact)} is below the smallest amount, {SMALLEST}; ask for "
            f"at least {SMALLEST}.",
        )
    return units


def _as_decimal(value: object) -> Decimal | None:
    """The exact, finite value of a spend (a float by its shortest repr), else None."""
    if isinstance(value, Decimal | float | int | str):
        try:
            return to_decimal(value, "spend")
        except (TypeError, ValueError):
            return None
    return None


def _check_target(target: object) -> float:
    if (
        isinstance(target, bool)
        or not isinstance(target, float | int)
        or not math.isfinite(target)
        or target <= 0
    ):
        raise InvalidQuery(
            ErrorReason.BAD_ACCURACY,
            "target_half_width",
            f"the target half-width must be a finite number above 0, got {_short(target)}; "
            "give the widest acceptable +/- on each cell, e.g. 50.",
        )
    return float(target)


def _check_confidence(level: object) -> float:
    return checked_confidence_level(level)


def _check_contributions(metadata: DatasetMetadata, requested: object) -> int:
    if requested is None:
        return metadata.max_contributions
    if (
        isinstance(requested, bool)
        or not isinstance(requested, int)
        or not 1 <= requested <= metadata.max_contributions
    ):
        raise InvalidQuery(
            ErrorReason.BAD_CONTRIBUTIONS,
            "max_contributions",
            f"max_contributions must be a whole number from 1 to the dataset's "
            f"{metadata.max_contributions}, got {_short(requested)}; leave it unset to use "
            f"{metadata.max_contributions}.",
        )
    return requested


def _column(metadata: DatasetMetadata, name: object, where: str) -> ColumnSpec:
    spec = metadata.column(name) if isinstance(name, str) else None
    if spec is None:
        raise InvalidQuery(
            ErrorReason.UNKNOWN_COLUMN,
            where,
            f"there is no column {_short(name)} in {metadata.dataset_id!r}; columns are: "
            f"{', '.join(c.name for c in metadata.columns)}.",
        )
    return spec


def _can_filter(spec: ColumnSpec) -> bool:
    """Filterable, and with a public set or range every literal is checked against."""
    if not spec.filterable or spec.visibility is Visibility.PRIVATE:
        return False
    return spec.values is not None or spec.bounds is not None or spec.kind is ColumnKind.DATE


def _names(metadata: DatasetMetadata, keep: Callable[[ColumnSpec], bool]) -> str:
    names = [c.name for c in metadata.columns if keep(c)]
    return ", ".join(names) if names else "(none)"


def _examples(values: tuple[KeyValue, ...]) -> str:
    shown = ", ".join(repr(value_to_json(v)) for v in values[:_EXAMPLES])
    return shown + (f", ... ({len(values)} in all)" if len(values) > _EXAMPLES else "")


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _filter_sort_key(item: CanonicalFilter) -> str:
    return repr((item.column, item.op.value, [value_to_json(v) for v in item.values]))

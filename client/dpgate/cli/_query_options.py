"""The query options shared by `dpgate query` and `dpgate preview`, and their parsing.

`--where` takes one condition per use (all must hold):

| form                  | means                       | example                             |
|-----------------------|-----------------------------|-------------------------------------|
| `col=value`           | equal                       | `--where status=DNA`                |
| `col!=value`          | not equal                   | `--where mode!=Unknown`             |
| `col>=v`, `col>v`, `col<=v`, `col<v` | compared          | `--where lead_time_days>=8`         |
| `col:in:a,b,c`        | one of the listed values    | `--where mode:in:Telephone,Home Visit` |

Values are typed from the dataset's description (integers, ISO dates like 2025-01-31,
or labels as written), so `hour>=18` compares numbers. Quote a condition holding spaces
or `<`/`>` for the shell: `--where "national_category=Clinical Triage"`.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Annotated

import typer

from dpgate._query import QuerySpec, count, total
from dpgate._types import ColumnInfo, DatasetDescription, KeyValue
from dpgate_shared.confidence import DEFAULT_CONFIDENCE_LEVEL, check_confidence_level
from dpgate_shared.units import to_decimal

CountOption = Annotated[bool, typer.Option("--count", help="Count appointments (the default).")]
SumOption = Annotated[
    str | None,
    typer.Option("--sum", metavar="COLUMN", help="Sum COLUMN, clamped to its public bounds."),
]
WhereOption = Annotated[
    list[str] | None,
    typer.Option(
        "--where",
        "-w",
        metavar="CONDITION",
        help="col=value, col!=value, col>=value (also >, <=, <), col:in:a,b. Repeatable (AND).",
    ),
]
ByOption = Annotated[
    list[str] | None,
    typer.Option("--by", "-b", metavar="COLUMN", help="Group by COLUMN (repeat, or a,b)."),
]


def _exact_amount(text: str) -> Decimal:
    """An --epsilon or --rho exactly as written ("0.1" stays 0.1, never a float)."""
    try:
        return to_decimal(text, "the amount")
    except (TypeError, ValueError) as error:
        raise typer.BadParameter(str(error)) from None


def _confidence_level(text: str) -> float:
    """A --confidence checked by the rule the client and server share."""
    try:
        return check_confidence_level(float(text))
    except ValueError:
        raise typer.BadParameter(
            f"{text!r} is not a number strictly between 0 and 1; use e.g. "
            f"{DEFAULT_CONFIDENCE_LEVEL} for 95% intervals"
        ) from None


EpsilonOption = Annotated[
    Decimal | None,
    typer.Option(
        "--epsilon",
        "-e",
        metavar="EPSILON",
        parser=_exact_amount,
        help="Spend this epsilon (pure-DP datasets), exactly as written, e.g. 0.5.",
    ),
]
RhoOption = Annotated[
    Decimal | None,
    typer.Option(
        "--rho",
        metavar="RHO",
        parser=_exact_amount,
        help="Spend this rho (zCDP datasets), exactly as written, e.g. 0.05.",
    ),
]
AccuracyOption = Annotated[
    float | None,
    typer.Option(
        "--accuracy",
        metavar="HALF_WIDTH",
        help="Spend the least that gives every cell an interval of +/- HALF_WIDTH.",
    ),
]
ConfidenceOption = Annotated[
    float | None,
    typer.Option(
        "--confidence",
        metavar="LEVEL",
        parser=_confidence_level,
        help=f"Interval confidence level, e.g. 0.9 (default {DEFAULT_CONFIDENCE_LEVEL}).",
    ),
]
ContributionsOption = Annotated[
    int | None,
    typer.Option(
        "--contributions",
        metavar="N",
        help="Bound each patient to N rows (below the dataset's) to pay less.",
    ),
]

_CONDITION = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(:in:|>=|<=|!=|==|=|>|<)(.*)$", re.DOTALL)
_FORMS = "col=value, col!=value, col>=value, col>value, col<=value, col<value or col:in:a,b"


@dataclass(frozen=True, slots=True)
class Where:
    """A parsed `--where`: column, operator (as the client builder spells it), raw values."""

    column: str
    op: str
    texts: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class QueryOptions:
    """Everything `query` and `preview` were given, before the dataset is known."""

    dataset_id: str
    sum_column: str | None
    count: bool
    where: tuple[Where, ...]
    group_by: tuple[str, ...]
    epsilon: Decimal | None
    rho: Decimal | None
    accuracy: float | None
    confidence: float | None
    contributions: int | None


def parse_where(text: str) -> Where:
    """`"lead_time_days>=8"` -> Where("lead_time_days", ">=", ("8",)).

    Raises:
        typer.BadParameter: the text is none of the documented forms, or a value is empty.
    """
    match = _CONDITION.match(text)
    if match is None:
        raise typer.BadParameter(f"{text!r} is not a condition; use {_FORMS}", param_hint="--where")
    column, op, rest = match.groups()
    if op == ":in:":
        texts = tuple(part.strip() for part in rest.split(","))
        op = "in"
    else:
        texts = (rest.strip(),)
        op = "=" if op == "==" else op
    if not all(texts):
        raise typer.BadParameter(f"{text!r} has an empty value", param_hint="--where")
    return Where(column, op, texts)


def query_options(
    dataset_id: str,
    *,
    count_flag: bool,
    sum_column: str | None,
    where: list[str] | None,
    by: list[str] | None,
    epsilon: Decimal | None,
    rho: Decimal | None,
    accuracy: float | None,
    confidence: float | None,
    contributions: int | None,
) -> QueryOptions:
    """Check the options that need no server; raises typer.BadParameter (exit code 2)."""
    if count_flag and sum_column:
        raise typer.BadParameter("give --count or --sum COLUMN, not both", param_hint="--sum")
    spends = [
        name
        for name, v in (("--epsilon", epsilon), ("--rho", rho), ("--accuracy", accuracy))
        if v is not None
    ]
    if len(spends) != 1:
        raise typer.BadParameter(
            "give exactly one of --epsilon, --rho or --accuracy"
            + (f" (got {', '.join(spends)})" if spends else ""),
            param_hint="--epsilon",
        )
    group_by = tuple(c.strip() for item in by or () for c in item.split(",") if c.strip())
    return QueryOptions(
        dataset_id=dataset_id,
        sum_column=sum_column,
        count=not sum_column,
        where=tuple(parse_where(text) for text in where or ()),
        group_by=group_by,
        epsilon=epsilon,
        rho=rho,
        accuracy=accuracy,
        confidence=confidence,
        contributions=contributions,
    )


def build_query(options: QueryOptions, description: DatasetDescription) -> QuerySpec:
    """The client's query, with `--where` values typed from the dataset's columns."""
    kinds = {c.name: c for c in description.columns}
    spec = (
        total(options.dataset_id, options.sum_column)
        if options.sum_column
        else count(options.dataset_id)
    )
    for where in options.where:
        values = tuple(_typed(text, kinds.get(where.column), where.column) for text in where.texts)
        spec = (
            spec.where_in(where.column, values)
            if where.op == "in"
            else spec.where(where.column, where.op, values[0])
        )
    spec = spec.by(*options.group_by)
    if options.epsilon is not None:
        spec = spec.epsilon(options.epsilon)
    elif options.rho is not None:
        spec = spec.rho(options.rho)
    elif options.accuracy is not None:
        spec = spec.accuracy(options.accuracy)
    if options.confidence is not None:
        spec = spec.confidence(options.confidence)
    if options.contributions is not None:
        spec = spec.contributions(options.contributions)
    return spec


def describe_query(options: QueryOptions) -> str:
    """A one-line title: "count of gp_appointments where status=DNA by month"."""
    what = f"sum of {options.sum_column}" if options.sum_column else "count"
    parts = [f"{what} of {options.dataset_id}"]
    if options.where:
        conditions = (
            f"{w.column} in ({', '.join(w.texts)})"
            if w.op == "in"
            else f"{w.column}{w.op}{w.texts[0]}"
            for w in options.where
        )
        parts.append("where " + " and ".join(conditions))
    if options.group_by:
        parts.append("by " + ", ".join(options.group_by))
    return " ".join(parts)


def _typed(text: str, column: ColumnInfo | None, name: str) -> KeyValue:
    """An integer or date column's value as that type; labels (and unknown columns) as text.

    An unknown column is sent as written: the server's refusal names it.
    """
    if column is None or column.kind == "string":
        return text
    try:
        if column.kind == "integer":
            return int(text)
        if column.kind == "date":
            return dt.date.fromisoformat(text)
    except ValueError:
        expected = "a whole number" if column.kind == "integer" else "an ISO date like 2025-01-31"
        raise typer.BadParameter(
            f"{name} holds {column.kind}s; {text!r} is not {expected}", param_hint="--where"
        ) from None
    return text

"""A question set's file: a TOML or JSON list of queries, in the options `dpgate query` takes.

TOML (`.toml`): one `[[query]]` table per query; a top-level `dataset` is the default for
every query. JSON (any other name): a list of query objects, or an object with `dataset`
and `query` (the list).

    dataset = "gp_appointments"

    [[query]]                      # appointments per practice per week
    by = ["practice_code", "week"]
    epsilon = 0.2

    [[query]]                      # GP minutes per ICB per month
    sum = "duration_minutes"
    where = ["hcp_type=GP"]
    by = "icb_code,month"
    epsilon = 0.1
    expected = 2_000_000           # the value you expect a cell to be (for the split)

A query's keys are the long options of `dpgate query`: `count`, `sum`, `where` (one
condition or a list, in the forms `--where` takes), `by` (a list, or "a,b"), `epsilon`,
`rho`, `accuracy`, `confidence`, `contributions`; with `dataset` and `expected`. Amounts
are read exactly as written (0.1 is 0.1, never a float's neighbour).
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import typer

from dpgate.cli._query_options import QueryOptions, query_options
from dpgate_shared.confidence import check_confidence_level
from dpgate_shared.units import to_decimal

QUERY_KEYS = frozenset(
    {
        "dataset",
        "count",
        "sum",
        "where",
        "by",
        "epsilon",
        "rho",
        "accuracy",
        "confidence",
        "contributions",
        "expected",
    }
)


@dataclass(frozen=True, slots=True)
class SetEntry:
    """One query of the file: its options and the cell value the planner expects (if given)."""

    options: QueryOptions
    expected: float | None


def read_query_set(path: Path) -> tuple[SetEntry, ...]:
    """The queries of `path`, in order.

    Raises:
        typer.BadParameter: the file cannot be read, is not TOML or JSON of the form above,
            or a query's options are wrong; the message names the query (from 1).
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise _problem(f"cannot read {path}: {error.strerror or error}") from None
    try:
        document: Any = (
            tomllib.loads(text, parse_float=Decimal)
            if path.suffix.lower() == ".toml"
            else json.loads(text, parse_float=Decimal)
        )
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as error:
        raise _problem(f"{path.name} is not valid {_kind(path)}: {error}") from None
    default_dataset, queries = _queries_of(document, path)
    return tuple(
        _entry(number, query, default_dataset) for number, query in enumerate(queries, start=1)
    )


def _queries_of(document: Any, path: Path) -> tuple[str | None, list[Any]]:
    if isinstance(document, list):
        return None, document
    if isinstance(document, dict):
        unknown = sorted(set(document) - {"dataset", "query"})
        if unknown:
            raise _problem(
                f"{path.name}: unknown top-level key(s) {', '.join(unknown)}; use `dataset`"
                " and `query` (one [[query]] table per query)"
            )
        queries = document.get("query", [])
        dataset = document.get("dataset")
        if isinstance(queries, list) and (dataset is None or isinstance(dataset, str)):
            if queries:
                return dataset, queries
            raise _problem(f"{path.name} holds no query; add one [[query]] table per query")
    raise _problem(
        f"{path.name} must be a list of queries, or hold `query`: the list (and `dataset`)"
    )


def _entry(number: int, query: Any, default_dataset: str | None) -> SetEntry:
    if not isinstance(query, dict):
        raise _problem(f"query {number} must be a table of options, not {query!r}")
    unknown = sorted(set(query) - QUERY_KEYS)
    if unknown:
        raise _problem(
            f"query {number}: unknown key(s) {', '.join(unknown)}; use"
            f" {', '.join(sorted(QUERY_KEYS))}"
        )
    try:
        dataset = query.get("dataset", default_dataset)
        if not isinstance(dataset, str) or not dataset:
            raise ValueError("name its `dataset` (or give one at the top of the file)")
        options = query_options(
            dataset,
            count_flag=_flag(query, "count"),
            sum_column=_text(query, "sum"),
            where=_texts(query, "where"),
            by=_texts(query, "by"),
            epsilon=_amount(query, "epsilon"),
            rho=_amount(query, "rho"),
            accuracy=_number(query, "accuracy"),
            confidence=_confidence(query),
            contributions=_whole(query, "contributions"),
        )
        expected = _number(query, "expected")
        if expected is not None and not expected > 0:
            raise ValueError("`expected` must be a positive number")
    except typer.BadParameter as error:
        raise _problem(f"query {number}: {_option_words(error)}") from None
    except (TypeError, ValueError) as error:
        raise _problem(f"query {number}: {error}") from None
    return SetEntry(options, expected)


def _flag(query: dict[str, Any], key: str) -> bool:
    value = query.get(key, False)
    if not isinstance(value, bool):
        raise ValueError(f"`{key}` must be true or false")
    return value


def _text(query: dict[str, Any], key: str) -> str | None:
    value = query.get(key)
    if value is not None and not isinstance(value, str):
        raise ValueError(f"`{key}` must be a column name (text)")
    return value


def _texts(query: dict[str, Any], key: str) -> list[str] | None:
    value = query.get(key)
    if value is None:
        return None
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise ValueError(f"`{key}` must be text or a list of texts")


def _amount(query: dict[str, Any], key: str) -> Decimal | None:
    value = query.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, Decimal | int | str):
        raise ValueError(f"`{key}` must be a number, e.g. 0.5")
    return to_decimal(value, f"`{key}`")


def _number(query: dict[str, Any], key: str) -> float | None:
    value = query.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, Decimal | int):
        raise ValueError(f"`{key}` must be a number")
    return float(value)


def _confidence(query: dict[str, Any]) -> float | None:
    level = _number(query, "confidence")
    return None if level is None else check_confidence_level(level)


def _whole(query: dict[str, Any], key: str) -> int | None:
    value = query.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"`{key}` must be a whole number")
    return value


def _option_words(error: typer.BadParameter) -> str:
    """A `dpgate query` option's complaint in the file's words (`epsilon`, not `--epsilon`)."""
    return error.message.replace("--sum COLUMN", "`sum`").replace("--", "")


def _kind(path: Path) -> str:
    return "TOML" if path.suffix.lower() == ".toml" else "JSON"


def _problem(message: str) -> typer.BadParameter:
    return typer.BadParameter(message, param_hint="FILE")

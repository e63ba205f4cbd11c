"""A canonical query in words: "count of appointments with status DNA by practice and week".

Works on the canonical JSON as recorded in the audit chain, so it reads old and new events
alike; anything it does not recognise is described as such rather than guessed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

_OPERATORS = {"!=": "not", "<": "<", "<=": "≤", ">": ">", ">=": "≥"}


@dataclass(frozen=True, slots=True)
class Question:
    """What the public page shows of one canonical query."""

    words: str
    dataset_version: str
    measure: str
    """"epsilon" or "rho"."""
    group_by: tuple[str, ...]


def describe(query_text: str) -> Question:
    """The question behind `query_text` (canonical JSON); a fallback for anything else."""
    try:
        raw = json.loads(query_text)
        return Question(
            words=_words(raw),
            dataset_version=str(raw.get("dataset_version", "")),
            measure="rho" if raw.get("accounting") == "zcdp" else "epsilon",
            group_by=tuple(str(c) for c in raw.get("group_by", ())),
        )
    except (ValueError, TypeError, KeyError, AttributeError):
        return Question("a question in a form this page cannot read", "", "epsilon", ())


def column_words(column: str) -> str:
    """ "practice_code" -> "practice"; "lead_time_days" -> "lead time days"."""
    name = column.removesuffix("_code")
    return name.replace("_", " ")


def _words(raw: dict[str, Any]) -> str:
    if raw["aggregate"] == "COUNT":
        text = "count of appointments"
    else:
        text = f"total {column_words(str(raw['column']))} of appointments"
    conditions = [_condition(f) for f in raw.get("filters", ())]
    if conditions:
        text += " with " + " and ".join(conditions)
    group_by = [column_words(str(c)) for c in raw.get("group_by", ())]
    if group_by:
        text += " by " + _and(group_by)
    return text


def _condition(raw: dict[str, Any]) -> str:
    column = column_words(str(raw["column"]))
    values = [str(v) for v in raw["values"]]
    op = str(raw["op"])
    if op in ("in", "="):
        if len(values) == 1:
            return f"{column} {values[0]}"
        return f"{column} one of {', '.join(values)}"
    return f"{column} {_OPERATORS.get(op, op)} {', '.join(values)}"


def _and(items: list[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]

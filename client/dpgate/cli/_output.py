"""Output of every command: a rich view for people, or one JSON document for scripts.

JSON conventions (stable for scripts): amounts of epsilon or rho are strings holding
exact decimals without exponent ("0.5", "0.00000025"), so no budget is ever rounded
through a float; times and dates are ISO 8601 strings; noisy values and intervals are
numbers.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

import polars as pl
import typer
from rich.console import Console
from rich.table import Table

from dpgate._types import BiasFigure
from dpgate_shared.privacy_loss import (
    DEFAULT_DELTA,
    delta_in_words,
    epsilon_equivalent,
    shown_epsilon,
)
from dpgate_shared.units import MEASURE_OF, measure_of, plain

EQUIVALENT_NOTE = (
    f"each rho with the epsilon it implies at delta {delta_in_words(DEFAULT_DELTA)}"
    " (rhos add up; their epsilons do not)"
)
"""Said under every table or line that shows a rho beside its epsilon equivalent."""


def unit(accounting: str) -> str:
    """ "epsilon" for pure-DP datasets, "rho" for zCDP ones."""
    return measure_of(accounting) if accounting in MEASURE_OF else accounting or "budget"


def amount(value: Decimal) -> str:
    """An exact amount without trailing zeros: Decimal("0.500000000") -> "0.5"."""
    return plain(value)


def amount_in_plain_terms(value: Decimal, accounting: str) -> str:
    """An exact amount, and for a rho the epsilon it implies at delta 0.000001.

    Example:
        >>> amount_in_plain_terms(Decimal("0.5"), "zcdp")
        '0.5 (epsilon 5.23)'
        >>> amount_in_plain_terms(Decimal(1), "pure_dp")
        '1'
    """
    epsilon = epsilon_equivalent(value, accounting)
    text = plain(value)
    return text if epsilon is None else f"{text} (epsilon {shown_epsilon(epsilon)})"


def jsonable(value: Any) -> Any:
    """`value` in JSON's types: dataclasses and mappings become objects, Decimals strings."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    elif isinstance(value, pl.DataFrame):
        value = list(value.iter_rows(named=True))
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return _scalar(value)


def _scalar(value: Any) -> Any:
    if isinstance(value, Decimal):
        return plain(value)
    if isinstance(value, dt.date | dt.datetime):
        return value.isoformat()
    return value


def stdout() -> Console:
    """A console on standard output (made per call: no console outlives a command)."""
    return Console(highlight=False, soft_wrap=False)


def stderr() -> Console:
    """A console on standard error, for notes and progress that scripts do not parse."""
    return Console(stderr=True, highlight=False)


@dataclasses.dataclass(frozen=True, slots=True)
class Output:
    """Where one command's result goes: JSON on stdout, or a view drawn with rich."""

    as_json: bool

    def emit(self, value: Any, render: Callable[[Console], None]) -> None:
        """Print `value` as JSON, or call `render` with a stdout console."""
        if self.as_json:
            typer.echo(json.dumps(jsonable(value), indent=2))
        else:
            render(stdout())

    @contextmanager
    def working(self, message: str) -> Iterator[None]:
        """A spinner on stderr while slow work runs (shown on terminals only)."""
        console = stderr()
        if self.as_json or not console.is_terminal:
            yield
            return
        with console.status(message):
            yield


def table(
    columns: Sequence[str], rows: Sequence[Sequence[object]], *, title: str = "", **kw: Any
) -> Table:
    """A rich table of plain cells (None shows as blank) that never splits a word.

    On a narrow terminal, text wraps at spaces only; a column whose cells have no spaces
    (ids, codes, amounts, times) stays on one line and is cut with an ellipsis if it must
    shrink, so a requester id or token id is never broken across lines, where a reader
    would copy half of it. Headers keep their width. `--json` gives every value whole.
    """
    cells = [["" if cell is None else str(cell) for cell in row] for row in rows]
    view = Table(title=title or None, title_justify="left", **kw)
    for index, name in enumerate(columns):
        one_word = all(" " not in row[index] for row in cells)
        view.add_column(name, overflow="ellipsis", no_wrap=one_word)
    for row in cells:
        view.add_row(*row)
    return view


def bias_in_words(figure: BiasFigure | None) -> list[str]:
    """The bias figure's lines: what the bounds dropped, read beside every answer on the
    version (released once at publish; reading it is free)."""
    if figure is None:
        return []
    if not figure.released:
        return [f"bias of the bounds: no figure for {figure.version} ({figure.note})"]
    level = f"{figure.confidence_level:.0%}"
    head = f"bias of the bounds ({figure.version}, DP counts, {level} intervals, free to read):"
    return [head, *(f"  {line}" for line in figure.lines())]

"""`dpgate query-set`: several queries previewed together, and run all or nothing.

FILE lists the queries in the options `dpgate query` takes (see `dpgate.cli._query_set_file`
for its form). `preview` shows each query's cost and interval, their total, and with
`--total` a split of that total that makes every query's interval the same fraction of the
cell value expected of it. `run` releases every query and charges their sum in one step, or
nothing at all; with `--total` it runs the split.

Expected cell values: a query's `expected` in FILE, else, for a COUNT, the registered
population of a typical cell from the public practice list sizes (`dpgate.expected_cells`).
"""

from __future__ import annotations

import dataclasses
import uuid
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from dpgate._client import Client
from dpgate._query import QuerySpec
from dpgate._question_sets import SetPreview
from dpgate._types import DatasetDescription, PreviewResult, QueryResult
from dpgate.accuracy import median_rel_half_width, percent
from dpgate.cli._output import EQUIVALENT_NOTE, amount_in_plain_terms, table, unit
from dpgate.cli._query_options import build_query, describe_query
from dpgate.cli._query_set_file import SetEntry, read_query_set
from dpgate.cli._session import JsonOption, connect, output
from dpgate.expected_cells import LIST_SIZE_COLUMN, expected_cell_value
from dpgate_shared.units import to_decimal

app = typer.Typer(
    help="Question sets: preview several queries at once, run them all or nothing (analyst"
    " token). FILE: a TOML ([[query]] tables) or JSON list of queries, each with the options"
    " of `dpgate query` (count, sum, where, by, epsilon, rho, accuracy, confidence,"
    " contributions), `dataset` and `expected`."
)

PRACTICES_TABLE = "practices"
GIVEN = "given"
LIST_SIZES = "list sizes"


def _exact_total(text: str) -> Decimal:
    try:
        return to_decimal(text, "the total")
    except (TypeError, ValueError) as error:
        raise typer.BadParameter(str(error)) from None


FileArgument = Annotated[
    Path,
    typer.Argument(
        metavar="FILE", help="The queries: .toml ([[query]] tables), else JSON (a list)."
    ),
]
TotalOption = Annotated[
    Decimal | None,
    typer.Option(
        "--total",
        metavar="AMOUNT",
        parser=_exact_total,
        help="Split this total (epsilon, or rho on a zCDP dataset) between the queries so"
        " every interval is the same fraction of the cell value expected of it.",
    ),
]


@dataclass(frozen=True, slots=True)
class _Plan:
    """The file's queries built against their datasets, and the expected values to send."""

    entries: tuple[SetEntry, ...]
    specs: tuple[QuerySpec, ...]
    accounting: str
    expected: tuple[float | None, ...]
    sources: tuple[str, ...]
    """Per query: "given", "list sizes" or "" (none)."""

    @property
    def sent_expected(self) -> list[float] | None:
        """All expected values, or None (the server then equalises half-widths)."""
        if all(v is not None for v in self.expected):
            return [v for v in self.expected if v is not None]
        return None

    def total_for(self, total: Decimal | None) -> dict[str, Decimal]:
        """`preview_set`'s keyword for `total` in the set's measure."""
        if total is None:
            return {}
        return {"total_rho" if self.accounting == "zcdp" else "total_epsilon": total}


@app.command()
def preview(
    ctx: typer.Context,
    file: FileArgument,
    total: TotalOption = None,
    json_output: JsonOption = False,
) -> None:
    """Each query's cost and interval, their total, and a split of --total: free."""
    entries = read_query_set(file)
    out = output(ctx, json_output)
    with connect(ctx, Client, out) as client:
        plan = _plan(client, entries, split=total is not None)
        result = client.preview_set(
            plan.specs, expected=plan.sent_expected, **plan.total_for(total)
        )
    out.emit(
        _preview_document(plan, result, total),
        lambda console: _print_preview(console, plan, result, total),
    )


@app.command()
def run(
    ctx: typer.Context,
    file: FileArgument,
    idempotency_key: Annotated[
        str | None,
        typer.Option(
            metavar="KEY",
            help="Run again with the same KEY (after a lost answer, say) to get the same"
            " answers, charged once. Default: a new key, printed.",
        ),
    ] = None,
    total: TotalOption = None,
    json_output: JsonOption = False,
) -> None:
    """Release every query and charge their sum in one step, or nothing at all.

    Queries already released to you are free repeats. With --total, each query runs at
    its share of the total (as `dpgate query-set preview --total` shows it).
    """
    entries = read_query_set(file)
    out = output(ctx, json_output)
    key = idempotency_key or uuid.uuid4().hex
    with connect(ctx, Client, out) as client:
        plan = _plan(client, entries, split=total is not None)
        specs = plan.specs
        if total is not None:
            split = client.preview_set(specs, expected=plan.sent_expected, **plan.total_for(total))
            specs = tuple(
                _at(spec, spend, plan.accounting)
                for spec, spend in zip(specs, split.split_spends, strict=True)
            )
        with out.working(f"computing {len(specs)} DP answers"):
            results = client.run_set(specs, idempotency_key=key)
        remaining = {
            b.dataset_id: b.remaining
            for dataset_id in dict.fromkeys(s.dataset_id for s in specs)
            for b in client.budget(dataset_id)
        }
    out.emit(
        _run_document(plan, results, key, remaining),
        lambda console: _print_run(console, plan, results, key, remaining),
    )


def _plan(client: Client, entries: tuple[SetEntry, ...], *, split: bool) -> _Plan:
    """Build each query from its dataset's description, and resolve expected values.

    Raises:
        ValueError: a split is asked and some queries have an expected value but others
            have none (a SUM, say): the message names them.
    """
    descriptions: dict[str, DatasetDescription] = {}
    for entry in entries:
        dataset_id = entry.options.dataset_id
        if dataset_id not in descriptions:
            descriptions[dataset_id] = client.describe(dataset_id)
    specs = tuple(build_query(e.options, descriptions[e.options.dataset_id]) for e in entries)
    expected: list[float | None] = [e.expected for e in entries]
    sources = [GIVEN if e.expected is not None else "" for e in entries]
    for dataset_id, description in descriptions.items():
        members = [i for i, s in enumerate(specs) if s.dataset_id == dataset_id]
        if all(expected[i] is not None for i in members):
            continue
        practices = _practices(client, description)
        if practices is None:
            continue
        values = {c.name: c.values for c in description.columns}
        for i in members:
            if expected[i] is None:
                expected[i] = expected_cell_value(specs[i], practices, values)
                sources[i] = LIST_SIZES if expected[i] is not None else ""
    missing = [i + 1 for i, value in enumerate(expected) if value is None]
    if split and missing and len(missing) < len(entries):
        raise ValueError(
            f"give `expected` (the value you expect a cell to be) for query"
            f" {', '.join(map(str, missing))}: the split needs one for every query, and public"
            " list sizes give one only for counts"
        )
    accounting = descriptions[specs[0].dataset_id].dataset.accounting
    return _Plan(entries, specs, accounting, tuple(expected), tuple(sources))


def _practices(client: Client, description: DatasetDescription) -> Any:
    """The public practices table, if the dataset has one with list sizes."""
    columns = description.public_tables.get(PRACTICES_TABLE, ())
    if LIST_SIZE_COLUMN not in columns:
        return None
    return client.public_table(description.dataset.dataset_id, PRACTICES_TABLE)


def _at(spec: QuerySpec, spend: Decimal, accounting: str) -> QuerySpec:
    """`spec` at its share of the total, in the set's measure."""
    return spec.rho(spend) if accounting == "zcdp" else spec.epsilon(spend)


def _relative(half_width: float, expected: float | None) -> float | None:
    return half_width / expected if expected else None


def _preview_document(plan: _Plan, result: SetPreview, total: Decimal | None) -> dict[str, Any]:
    def member(i: int) -> dict[str, Any]:
        preview = result.members[i]
        expected = plan.expected[i]
        return {
            "query": describe_query(plan.entries[i].options),
            "expected": expected,
            "expected_source": plan.sources[i] or None,
            "stated": _preview_fields(preview.stated),
            "stated_relative_half_width": _relative(preview.stated.half_width, expected),
            "split": None if preview.split is None else _preview_fields(preview.split),
            "split_relative_half_width": preview.split_relative_half_width,
        }

    return {
        "accounting": result.accounting,
        "stated_total": result.stated_total,
        "total": total,
        "split_relative_half_width": result.split_relative_half_width,
        "members": [member(i) for i in range(len(result.members))],
    }


def _preview_fields(result: PreviewResult) -> dict[str, Any]:
    return {f.name: getattr(result, f.name) for f in dataclasses.fields(result)}


def _print_preview(
    console: Console, plan: _Plan, result: SetPreview, total: Decimal | None
) -> None:
    accounting = result.accounting
    name = unit(accounting)
    level = result.members[0].stated.confidence_level
    headers = ["#", "query", "cells", name, f"+/- ({level * 100:g}%)", "expected", "+/- %"]
    if total is not None:
        headers += [f"split {name}", "split +/-", "split +/- %"]
    rows = []
    for i, member in enumerate(result.members):
        stated, expected = member.stated, plan.expected[i]
        row: list[object] = [
            i + 1,
            describe_query(plan.entries[i].options),
            f"{stated.cells:,}",
            amount_in_plain_terms(stated.spend, accounting),
            f"{stated.half_width:,.1f}",
            _expected_text(expected, plan.sources[i]),
            percent(_relative(stated.half_width, expected)),
        ]
        if member.split is not None:
            row += [
                amount_in_plain_terms(member.split.spend, accounting),
                f"{member.split.half_width:,.1f}",
                percent(member.split_relative_half_width),
            ]
        rows.append(row)
    console.print(table(headers, rows, title=f"Question set ({len(rows)} queries)"))
    console.print(
        f"as stated: {name} {amount_in_plain_terms(result.stated_total, accounting)} in all"
        " (queries already released to you are free)"
    )
    if total is not None:
        console.print(
            f"split of {name} {amount_in_plain_terms(total, accounting)}: every query +/-"
            f" {percent(result.split_relative_half_width)} of its expected cell value"
            + ("" if plan.sent_expected else " (no expected values: equal half-widths)")
        )
    if LIST_SIZES in plan.sources:
        console.print(
            "expected (list sizes): the registered patients a typical cell covers, from the"
            " public practice list sizes, so +/- % is appointments per 100 registered"
            " patients; the split is right when appointments per patient are alike across"
            " the queries. Give `expected` in FILE for cell values in your own terms"
        )
    if accounting == "zcdp":
        console.print(EQUIVALENT_NOTE)
    console.print("nothing was spent: previews are free")


def _expected_text(expected: float | None, source: str) -> str:
    if expected is None:
        return ""
    text = f"{expected:,.0f}" if expected >= 10 else f"{expected:g}"
    return text + (" patients (list sizes)" if source == LIST_SIZES else "")


def _run_document(
    plan: _Plan, results: list[QueryResult], key: str, remaining: dict[str, Decimal]
) -> dict[str, Any]:
    def member(i: int, result: QueryResult) -> dict[str, Any]:
        return {
            "query": describe_query(plan.entries[i].options),
            "release_id": result.release_id,
            "dataset_id": result.dataset_id,
            "dataset_version": result.dataset_version,
            "charged": result.charged,
            "release_cost": result.release_cost,
            "repeat": result.repeat,
            "mechanism": result.mechanism,
            "noise_scale": result.noise_scale,
            "confidence_level": result.confidence_level,
            "canonical_query": result.canonical_query,
            "cells": result.relative_accuracy(plan.expected[i]),
        }

    return {
        "idempotency_key": key,
        "accounting": plan.accounting,
        "charged": sum((r.charged for r in results), Decimal(0)),
        "remaining": remaining,
        "members": [member(i, r) for i, r in enumerate(results)],
    }


def _print_run(
    console: Console,
    plan: _Plan,
    results: list[QueryResult],
    key: str,
    remaining: dict[str, Decimal],
) -> None:
    accounting = plan.accounting
    name = unit(accounting)
    rows = []
    for i, result in enumerate(results):
        median = median_rel_half_width(result.relative_accuracy())
        rows.append(
            (
                i + 1,
                describe_query(plan.entries[i].options),
                result.release_id,
                f"{result.frame.height:,}",
                "free (repeat)"
                if result.repeat
                else amount_in_plain_terms(result.charged, accounting),
                percent(median),
            )
        )
    headers = ("#", "query", "release", "cells", f"charged {name}", "median +/- % of value")
    console.print(table(headers, rows, title=f"Question set ({len(rows)} queries)"))
    charged = sum((r.charged for r in results), Decimal(0))
    console.print(
        f"charged {name} {amount_in_plain_terms(charged, accounting)} in all, in one step"
        " (all released, or nothing)"
    )
    for dataset_id, left in remaining.items():
        console.print(
            f"remaining {name} on {dataset_id}: {amount_in_plain_terms(left, accounting)}"
        )
    console.print(
        f"idempotency key {key}: run again with --idempotency-key {key} for the same answers,"
        " charged once; --json has every cell"
    )
    if accounting == "zcdp":
        console.print(EQUIVALENT_NOTE)

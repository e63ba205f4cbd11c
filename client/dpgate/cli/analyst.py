"""Analyst commands (an analyst token): datasets, describe, preview, query, budget, releases."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from dpgate._client import Client
from dpgate._types import (
    BudgetInfo,
    ColumnInfo,
    DatasetDescription,
    DatasetInfo,
    PreviewResult,
    QueryResult,
    ReleaseInfo,
)
from dpgate.cli._output import amount, table, unit
from dpgate.cli._query_options import (
    AccuracyOption,
    ByOption,
    ConfidenceOption,
    ContributionsOption,
    CountOption,
    EpsilonOption,
    QueryOptions,
    RhoOption,
    SumOption,
    WhereOption,
    build_query,
    describe_query,
    query_options,
)
from dpgate.cli._session import JsonOption, connect, output

app = typer.Typer(help="Ask questions (analyst token).")

DatasetArgument = Annotated[
    str, typer.Argument(metavar="DATASET", help="Dataset id, e.g. gp_appointments.")
]
OptionalDataset = Annotated[
    str, typer.Argument(metavar="[DATASET]", help="Only this dataset (default: all).")
]
_SHOWN_VALUES = 8


@app.command()
def datasets(ctx: typer.Context, json_output: JsonOption = False) -> None:
    """The datasets the server holds, with their current versions."""
    out = output(ctx, json_output)
    with connect(ctx, Client, out) as client:
        found = client.datasets()
    out.emit(found, lambda console: console.print(_datasets_table(found)))


@app.command()
def describe(ctx: typer.Context, dataset: DatasetArgument, json_output: JsonOption = False) -> None:
    """A dataset's columns: what can be filtered, grouped and summed, and the public values."""
    out = output(ctx, json_output)
    with connect(ctx, Client, out) as client:
        description = client.describe(dataset)
    out.emit(description, lambda console: _print_description(console, description))


@app.command()
def preview(
    ctx: typer.Context,
    dataset: DatasetArgument,
    count_flag: CountOption = False,
    sum_column: SumOption = None,
    where: WhereOption = None,
    by: ByOption = None,
    epsilon: EpsilonOption = None,
    rho: RhoOption = None,
    accuracy: AccuracyOption = None,
    confidence: ConfidenceOption = None,
    contributions: ContributionsOption = None,
    json_output: JsonOption = False,
) -> None:
    """What a query would cost and how wide its intervals would be: free, reads no data."""
    out = output(ctx, json_output)
    options = query_options(
        dataset,
        count_flag=count_flag,
        sum_column=sum_column,
        where=where,
        by=by,
        epsilon=epsilon,
        rho=rho,
        accuracy=accuracy,
        confidence=confidence,
        contributions=contributions,
    )
    with connect(ctx, Client, out) as client:
        spec = build_query(options, client.describe(dataset))
        result = client.preview(spec)
    out.emit(result, lambda console: _print_preview(console, options, result))


@app.command()
def query(
    ctx: typer.Context,
    dataset: DatasetArgument,
    count_flag: CountOption = False,
    sum_column: SumOption = None,
    where: WhereOption = None,
    by: ByOption = None,
    epsilon: EpsilonOption = None,
    rho: RhoOption = None,
    accuracy: AccuracyOption = None,
    confidence: ConfidenceOption = None,
    contributions: ContributionsOption = None,
    limit: Annotated[
        int, typer.Option(min=0, help="Rows to show in the table (0: all); --json has all.")
    ] = 50,
    csv: Annotated[
        Path | None,
        typer.Option("--csv", metavar="FILE", help="Also write every cell (unrounded) to FILE."),
    ] = None,
    json_output: JsonOption = False,
) -> None:
    """Run a DP count or sum: every cell with its interval, the charge and what remains.

    Asking the same question again is free and returns the same answer.
    """
    out = output(ctx, json_output)
    options = query_options(
        dataset,
        count_flag=count_flag,
        sum_column=sum_column,
        where=where,
        by=by,
        epsilon=epsilon,
        rho=rho,
        accuracy=accuracy,
        confidence=confidence,
        contributions=contributions,
    )
    with connect(ctx, Client, out) as client:
        description = client.describe(dataset)
        spec = build_query(options, description)
        with out.working("computing the DP answer"):
            result = client.query(spec)
    if csv is not None:
        result.frame.write_csv(csv)
    accounting = description.dataset.accounting
    out.emit(
        _result_document(result, accounting),
        lambda console: _print_result(console, options, result, accounting, limit),
    )


@app.command()
def budget(
    ctx: typer.Context, dataset: OptionalDataset = "", json_output: JsonOption = False
) -> None:
    """Your budgets: allocated, spent and remaining, per dataset."""
    out = output(ctx, json_output)
    with connect(ctx, Client, out) as client:
        budgets = client.budget(dataset)
    out.emit(budgets, lambda console: console.print(_budgets_table(budgets)))


@app.command()
def releases(
    ctx: typer.Context,
    dataset: OptionalDataset = "",
    limit: Annotated[
        int | None, typer.Option("--limit", min=1, metavar="N", help="Only the N newest.")
    ] = None,
    json_output: JsonOption = False,
) -> None:
    """Your earlier releases, newest first (ask the same query again to see its cells, free)."""
    out = output(ctx, json_output)
    with connect(ctx, Client, out) as client:
        found = client.releases(dataset, limit=limit)
    out.emit(found, lambda console: console.print(_releases_table(found)))


def _datasets_table(found: list[DatasetInfo]) -> Any:
    rows = [
        (
            d.dataset_id,
            d.title,
            d.version,
            unit(d.accounting),
            d.max_contributions,
            f"{d.period_start} to {d.period_end}",
        )
        for d in found
    ]
    columns = ("dataset", "title", "version", "spend", "max contributions", "period")
    return table(columns, rows, title="Datasets")


def _print_description(console: Console, description: DatasetDescription) -> None:
    d = description.dataset
    console.print(f"[bold]{d.dataset_id}[/bold] {d.title} (version {d.version})")
    if d.description:
        console.print(d.description)
    console.print(
        f"spend: {unit(d.accounting)}; each patient counts in at most {d.max_contributions}"
        f" rows; period {d.period_start} to {d.period_end}\n"
    )
    rows = [_column_row(c) for c in description.columns]
    columns = ("column", "kind", "filter", "group", "sum", "bounds", "values")
    console.print(table(columns, rows, title="Columns"))
    for name, names in description.public_tables.items():
        console.print(f"public table [bold]{name}[/bold]: {', '.join(names)}")


def _column_row(column: ColumnInfo) -> tuple[object, ...]:
    def mark(flag: bool) -> str:
        return "yes" if flag else ""

    values = [str(v) for v in column.values[:_SHOWN_VALUES]]
    if len(column.values) > _SHOWN_VALUES:
        values.append(f"... ({len(column.values)} in all)")
    bounds = "" if column.bounds is None else f"{column.bounds[0]} to {column.bounds[1]}"
    kind = column.kind if column.public else f"{column.kind} (private)"
    return (
        column.name,
        kind,
        mark(column.filterable),
        mark(column.groupable),
        mark(column.summable),
        bounds,
        ", ".join(values),
    )


def _print_preview(console: Console, options: QueryOptions, result: PreviewResult) -> None:
    console.print(f"[bold]preview[/bold]: {describe_query(options)}")
    console.print(
        f"would spend {unit(result.accounting)} {amount(result.spend)} for {result.cells} cell(s);"
        f" each cell +/- {result.half_width:,.1f} at {_percent(result.confidence_level)}"
        f" confidence ({result.mechanism}, scale {result.noise_scale:.4g})"
    )
    for note in result.notes:
        console.print(f"note: {note}")
    for warning in result.warnings:
        console.print(f"[bold]charged again[/bold]: {warning}")
    console.print("nothing was spent: previews are free")


def _result_document(result: QueryResult, accounting: str) -> dict[str, object]:
    return {
        "release_id": result.release_id,
        "dataset_id": result.dataset_id,
        "dataset_version": result.dataset_version,
        "accounting": accounting,
        "group_by": list(result.group_by),
        "mechanism": result.mechanism,
        "noise_scale": result.noise_scale,
        "confidence_level": result.confidence_level,
        "charged": result.charged,
        "release_cost": result.release_cost,
        "remaining": result.remaining,
        "repeat": result.repeat,
        "canonical_query": result.canonical_query,
        "cells": result.frame,
    }


def _print_result(
    console: Console, options: QueryOptions, result: QueryResult, accounting: str, limit: int
) -> None:
    shown = result.display()
    columns = [*result.group_by, "value", "ci_low", "ci_high"]
    rows = shown.select(columns).head(limit or shown.height).rows()
    view = table(
        [*result.group_by, "value", "low", "high"],
        [tuple(f"{v:,}" if isinstance(v, int) else v for v in row) for row in rows],
        title=describe_query(options),
        caption=(
            f"{_percent(result.confidence_level)} intervals; values rounded, negatives shown"
            " as 0 (--json or --csv give the unbiased values)"
        ),
    )
    for column in view.columns[len(result.group_by) :]:
        column.justify = "right"
    console.print(view)
    if shown.height > len(rows):
        console.print(f"... {shown.height - len(rows)} more rows (--limit 0, --json or --csv)")
    name = unit(accounting)
    if result.repeat:
        charge = f"free: a repeat of release {result.release_id} (first cost {name} "
        charge += f"{amount(result.release_cost)})"
    else:
        charge = f"charged {name} {amount(result.charged)} for release {result.release_id}"
    console.print(f"{charge}; remaining {name} {amount(result.remaining)}")


def _budgets_table(budgets: list[BudgetInfo]) -> Any:
    rows = [
        (
            b.dataset_id,
            unit(b.accounting),
            amount(b.allocated),
            amount(b.spent),
            amount(b.remaining),
            b.expires_at or "never",
        )
        for b in budgets
    ]
    columns = ("dataset", "spend", "allocated", "spent", "remaining", "expires")
    return table(columns, rows, title="Your budgets")


def _releases_table(found: list[ReleaseInfo]) -> Any:
    rows = [
        (
            _when(r.created_at),
            r.release_id,
            r.dataset_id,
            r.dataset_version,
            amount(r.cost),
            summarise_canonical(r.canonical_query),
        )
        for r in found
    ]
    columns = ("created", "release", "dataset", "version", "cost", "query")
    return table(columns, rows, title=f"Your releases ({len(found)})")


def summarise_canonical(canonical: str) -> str:
    """A release's canonical query in words ("COUNT where status in (DNA) by month").

    The canonical text is the server's; anything this does not recognise is shown as is.
    """
    try:
        query = json.loads(canonical)
        what = str(query["aggregate"]) + (f"({query['column']})" if query.get("column") else "")
        conditions = [
            f"{f['column']} {f['op']} ({', '.join(_canonical_value(v) for v in f['values'])})"
            for f in query.get("filters", [])
        ]
        group_by = [str(c) for c in query.get("group_by", [])]
    except (ValueError, KeyError, TypeError):
        return canonical
    text = what + (" where " + " and ".join(conditions) if conditions else "")
    return text + (" by " + ", ".join(group_by) if group_by else "")


def _canonical_value(value: object) -> str:
    """A canonical filter value: a label, a number, or a tagged one like {"date": "..."}."""
    if isinstance(value, dict) and len(value) == 1:
        return str(next(iter(value.values())))
    return str(value)


def _when(timestamp: str) -> str:
    """ "2025-06-01T09:30:12.123+00:00" -> "2025-06-01 09:30:12" (UTC, as the server sends)."""
    return timestamp.replace("T", " ")[:19] if "T" in timestamp else timestamp


def _percent(level: float) -> str:
    return f"{level * 100:g}%"

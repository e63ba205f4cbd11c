"""Analyst commands (an analyst token): datasets, describe, preview, query, budget, releases."""

from __future__ import annotations

import dataclasses
import json
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any

import polars as pl
import typer
from rich.console import Console

from dpgate._client import Client, Derive
from dpgate._types import (
    BudgetInfo,
    ColumnInfo,
    ContributionBounds,
    DatasetDescription,
    DatasetInfo,
    PreviewResult,
    QueryResult,
    ReleaseInfo,
)
from dpgate.accuracy import (
    REL_HALF_WIDTH,
    REL_HALF_WIDTH_EXPECTED,
    median_rel_half_width,
    percent,
)
from dpgate.cli._output import (
    EQUIVALENT_NOTE,
    amount_in_plain_terms,
    bias_in_words,
    table,
    unit,
)
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
from dpgate_shared.privacy_loss import DEFAULT_DELTA, epsilon_equivalent, in_plain_terms

app = typer.Typer(help="Ask questions (analyst token).")

DatasetArgument = Annotated[
    str, typer.Argument(metavar="DATASET", help="Dataset id, e.g. gp_appointments.")
]
OptionalDataset = Annotated[
    str, typer.Argument(metavar="[DATASET]", help="Only this dataset (default: all).")
]
_SHOWN_VALUES = 8

ExpectedOption = Annotated[
    float | None,
    typer.Option(
        "--expected",
        metavar="VALUE",
        min=0,
        help="The value you expect a cell to be: widths are also shown as a % of it.",
    ),
]
RoundToOption = Annotated[
    int | None,
    typer.Option(
        "--round-to",
        metavar="N",
        min=1,
        help="Publication style: values to the nearest N (NHS: 5), intervals outwards."
        " Post-processing: no cost; the release is unchanged.",
    ),
]
SuppressBelowOption = Annotated[
    float | None,
    typer.Option(
        "--suppress-below",
        metavar="N",
        help="Publication style: hide cells whose noisy value is below N (flagged"
        " 'suppressed'). Post-processing: no cost; the release is unchanged.",
    ),
]


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
    expected: ExpectedOption = None,
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
        result = client.preview(spec, expected=expected)
    out.emit(_preview_document(result), lambda console: _print_preview(console, options, result))


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
    expected: ExpectedOption = None,
    round_to: RoundToOption = None,
    suppress_below: SuppressBelowOption = None,
    derive: Annotated[
        str,
        typer.Option(
            help="fresh (the default): compute and charge a fresh release; if-as-accurate:"
            " answer free from a release already made when its intervals are no wider than a"
            " fresh answer's; if-any: however wide (dpgate preview shows both options)."
        ),
    ] = "fresh",
    json_output: JsonOption = False,
) -> None:
    """Run a DP count or sum: every cell with its interval, the charge and what remains.

    Asking the same question again is free and returns the same answer; a question that
    cells of a release already made add up to can be answered free from them (--derive).
    """
    preference = _DERIVE.get(derive)
    if preference is None:
        raise typer.BadParameter("use if-as-accurate, if-any or fresh", param_hint="--derive")
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
            result = client.query(spec, derive=preference)
    shown = _Shown(expected, round_to, suppress_below)
    if csv is not None:
        result.frame.write_csv(csv)
    accounting = description.dataset.accounting
    out.emit(
        _result_document(result, accounting, shown),
        lambda console: _print_result(console, options, result, accounting, limit, shown),
    )


@app.command()
def budget(
    ctx: typer.Context, dataset: OptionalDataset = "", json_output: JsonOption = False
) -> None:
    """Your budgets: allocated, spent and remaining, per dataset."""
    out = output(ctx, json_output)
    with connect(ctx, Client, out) as client:
        budgets = client.budget(dataset)
    out.emit(
        [_budget_document(b) for b in budgets],
        lambda console: console.print(_budgets_table(budgets)),
    )


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
        accounting = {d.dataset_id: d.accounting for d in client.datasets()} if found else {}
    out.emit(found, lambda console: console.print(_releases_table(found, accounting)))


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
        f" rows; period {d.period_start} to {d.period_end}"
    )
    for line in bounds_in_words(description.bounds, d.max_contributions, d.accounting):
        console.print(line)
    for line in bias_in_words(description.bias_figure):
        console.print(line)
    console.print()
    rows = [_column_row(c) for c in description.columns]
    columns = ("column", "kind", "filter", "group", "sum", "bounds", "values")
    console.print(table(columns, rows, title="Columns"))
    for name, names in description.public_tables.items():
        console.print(f"public table [bold]{name}[/bold]: {', '.join(names)}")


def bounds_in_words(
    bounds: ContributionBounds | None, max_contributions: int, accounting: str
) -> list[str]:
    """What a version's contribution bounds are, and how costs follow from them.

    Example:
        >>> from dpgate import ContributionBounds, PeriodCap
        >>> caps = (PeriodCap("week", rows=3, periods=10, practice_periods=10),)
        >>> for line in bounds_in_words(
        ...     ContributionBounds(24, True, "keyed-hash-k-per-patient", caps), 24, "zcdp"
        ... ):
        ...     print(line)
        bounds, cut and verified at publish (keyed-hash-k-per-patient): at most 24 rows per patient (K)
          per week: at most 3 rows (k), in at most 10 weeks (g), in at most 10 (practice_code, week) groups
        costs follow from them: a count grouped by a capped period is charged for an L2 change of min(K, k * sqrt(min(g, K))) per patient, not K (times the clamp for a sum)
    """  # noqa: E501
    if bounds is None or not bounds.verified:
        return [
            f"bounds: each query keeps at most {max_contributions} rows per patient (chosen at"
            " random) and is charged for them"
            + ("" if bounds is None else "; the version's recorded bounds are not verified")
        ]
    lines = [
        f"bounds, cut and verified at publish ({bounds.method}): at most"
        f" {bounds.max_contributions} rows per patient (K)"
    ]
    for cap in bounds.period_caps:
        parts = []
        if cap.rows is not None:
            parts.append(f"at most {cap.rows} rows (k)")
        if cap.periods is not None:
            parts.append(f"in at most {cap.periods} {cap.period}s (g)")
        if cap.practice_periods is not None:
            parts.append(f"in at most {cap.practice_periods} (practice_code, {cap.period}) groups")
        lines.append(f"  per {cap.period}: {', '.join(parts)}")
    if bounds.period_caps:
        change = (
            "an L2 change of min(K, k * sqrt(min(g, K)))"
            if accounting == "zcdp"
            else "an L1 change of min(K, g * k), less than K only when g * k < K"
        )
        lines.append(
            f"costs follow from them: a count grouped by a capped period is charged for {change}"
            " per patient, not K (times the clamp for a sum)"
        )
    return lines


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
        f"would spend {in_plain_terms(result.spend, result.accounting)} for {result.cells}"
        f" cell(s); each cell +/- {result.half_width:,.1f} at"
        f" {_percent(result.confidence_level)} confidence ({result.mechanism}, scale"
        f" {result.noise_scale:.4g})"
    )
    if result.expected is not None:
        console.print(
            f"that is +/- {percent(result.rel_half_width_expected)} of the {result.expected:,g}"
            " you expect a cell to be"
        )
    for note in result.notes:
        console.print(f"note: {note}")
    for warning in result.warnings:
        console.print(f"[bold]charged again[/bold]: {warning}")
    derived = result.derived
    if derived is not None:
        console.print(
            f"or free: derived from release {derived.derived_from}, {derived.cells} cell(s),"
            f" each +/- at most {derived.half_width:,.1f} (up to {derived.summed_cells}"
            " released cells added up)"
        )
    console.print("nothing was spent: previews are free")


_DERIVE: dict[str, Derive] = {
    "if-as-accurate": "if_as_accurate",
    "if-any": "if_any",
    "fresh": "fresh",
}


def _preview_document(result: PreviewResult) -> dict[str, object]:
    """The preview's fields, with its relative width and its spend's epsilon equivalent."""
    return {
        **{f.name: getattr(result, f.name) for f in dataclasses.fields(result)},
        "rel_half_width_expected": result.rel_half_width_expected,
        **_equivalent(result.accounting, spend=result.spend),
    }


def _equivalent(accounting: str, **amounts: Decimal) -> dict[str, float]:
    """For zCDP, each amount's epsilon equivalent (`NAME_epsilon_equivalent`, or
    `epsilon_equivalent` for one called `spend`) and the delta; nothing for pure DP, whose
    amounts are epsilons already."""
    found: dict[str, float] = {}
    for name, value in amounts.items():
        epsilon = epsilon_equivalent(value, accounting)
        if epsilon is not None:
            key = "epsilon_equivalent" if name == "spend" else f"{name}_epsilon_equivalent"
            found[key] = epsilon
    return {**found, "delta": DEFAULT_DELTA} if found else {}


def _budget_document(budget: BudgetInfo) -> dict[str, object]:
    """A budget's fields, with the epsilon equivalents of its rhos (zCDP)."""
    return {
        **{f.name: getattr(budget, f.name) for f in dataclasses.fields(budget)},
        **_equivalent(budget.accounting, allocated=budget.allocated, spent=budget.spent),
    }


@dataclasses.dataclass(frozen=True, slots=True)
class _Shown:
    """How `query` shows its cells: relative to an expected value, in publication style."""

    expected: float | None
    round_to: int | None
    suppress_below: float | None

    @property
    def published(self) -> bool:
        return self.round_to is not None or self.suppress_below is not None


def _result_document(result: QueryResult, accounting: str, shown: _Shown) -> dict[str, object]:
    document: dict[str, object] = {
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
        "derived_from": result.derived_from,
        "canonical_query": result.canonical_query,
        "bias_figure": result.bias_figure,
        **_equivalent(accounting, spend=result.release_cost),
        "cells": result.relative_accuracy(shown.expected),
    }
    if shown.published:
        document["published_cells"] = result.nhs_conventions(
            round_to=shown.round_to, suppress_below=shown.suppress_below
        )
    return document


def _print_result(
    console: Console,
    options: QueryOptions,
    result: QueryResult,
    accounting: str,
    limit: int,
    shown: _Shown,
) -> None:
    accuracy = result.relative_accuracy(shown.expected)
    cells = _cells_shown(result, shown)
    relative = [REL_HALF_WIDTH] + ([REL_HALF_WIDTH_EXPECTED] if shown.expected else [])
    frame = cells.with_columns(accuracy.select(relative))
    if shown.published:  # a hidden cell's width as a % of its value would give the value away
        frame = frame.with_columns(
            pl.when(pl.col("suppressed")).then(None).otherwise(pl.col(c)).alias(c) for c in relative
        )
    rows = frame.head(limit or frame.height).rows()
    headers = [*result.group_by, "value", "low", "high"]
    headers += ["suppressed"] if shown.published else []
    headers += ["+/- % of value"] + (["+/- % of expected"] if shown.expected else [])
    keys = len(result.group_by)
    view = table(
        headers,
        [_row_text(row, keys, len(relative)) for row in rows],
        title=describe_query(options),
        caption=_caption(result, shown),
    )
    for column in view.columns[keys:]:
        column.justify = "right"
    console.print(view)
    if frame.height > len(rows):
        console.print(f"... {frame.height - len(rows)} more rows (--limit 0, --json or --csv)")
    median = median_rel_half_width(accuracy)
    console.print(f"median interval half-width: {percent(median)} of the value")
    if shown.expected:
        console.print(
            f"each cell +/- {percent(median_rel_half_width(accuracy, REL_HALF_WIDTH_EXPECTED))}"
            f" of the {shown.expected:,g} you expect"
        )
    name = unit(accounting)
    if result.derived_from:
        charge = f"free: derived from release {result.derived_from} (its cells added up,"
        charge += " no new noise; --derive fresh for a charged release)"
    elif result.repeat:
        charge = f"free: a repeat of release {result.release_id} (first cost {name} "
        charge += f"{amount_in_plain_terms(result.release_cost, accounting)})"
    else:
        charge = f"charged {name} {amount_in_plain_terms(result.charged, accounting)}"
        charge += f" for release {result.release_id}"
    console.print(
        f"{charge}; remaining {name} {amount_in_plain_terms(result.remaining, accounting)}"
    )
    for line in bias_in_words(result.bias_figure):
        console.print(line)
    if accounting == "zcdp":
        console.print(EQUIVALENT_NOTE)


def _cells_shown(result: QueryResult, shown: _Shown) -> pl.DataFrame:
    """The cells as the table shows them: in publication style when asked, else rounded
    to whole numbers with negatives shown as 0."""
    if shown.published:
        return result.nhs_conventions(round_to=shown.round_to, suppress_below=shown.suppress_below)
    return result.display().select(*result.group_by, "value", "ci_low", "ci_high")


def _row_text(row: tuple[object, ...], keys: int, relative: int) -> tuple[object, ...]:
    """One table row: numbers with thousands separators, fractions as percentages."""
    head, tail = row[: len(row) - relative], row[len(row) - relative :]
    cells: list[object] = list(head[:keys])
    for value in head[keys:]:
        if isinstance(value, bool):
            cells.append("yes" if value else "")
        elif isinstance(value, int):
            cells.append(f"{value:,}")
        else:
            cells.append("" if value is None else value)
    cells.extend(percent(v if isinstance(v, float) else None) for v in tail)
    return tuple(cells)


def _caption(result: QueryResult, shown: _Shown) -> str:
    level = _percent(result.confidence_level)
    if shown.published:
        text = f"{level} intervals in publication style"
        if shown.round_to:
            text += f": values to the nearest {shown.round_to}, intervals outwards"
        if shown.suppress_below is not None:
            text += f"; cells below {shown.suppress_below:,g} (noisy value) suppressed"
        return text + " (post-processing: free, the release is unchanged; --json has both)"
    return (
        f"{level} intervals; values rounded, negatives shown as 0 (--json or --csv give the"
        " unbiased values); n/a: the interval reaches 0"
    )


def _budgets_table(budgets: list[BudgetInfo]) -> Any:
    rows = [
        (
            b.dataset_id,
            unit(b.accounting),
            amount_in_plain_terms(b.allocated, b.accounting),
            amount_in_plain_terms(b.spent, b.accounting),
            amount_in_plain_terms(b.remaining, b.accounting),
            b.expires_at or "never",
        )
        for b in budgets
    ]
    columns = ("dataset", "spend", "allocated", "spent", "remaining", "expires")
    caption = EQUIVALENT_NOTE if any(b.accounting == "zcdp" for b in budgets) else None
    return table(columns, rows, title="Your budgets", caption=caption)


def _releases_table(found: list[ReleaseInfo], accounting: dict[str, str]) -> Any:
    rows = [
        (
            _when(r.created_at),
            r.release_id,
            r.dataset_id,
            r.dataset_version,
            amount_in_plain_terms(r.cost, accounting.get(r.dataset_id, "")),
            summarise_canonical(r.canonical_query),
        )
        for r in found
    ]
    columns = ("created", "release", "dataset", "version", "cost", "query")
    caption = EQUIVALENT_NOTE if "zcdp" in accounting.values() else None
    return table(columns, rows, title=f"Your releases ({len(found)})", caption=caption)


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

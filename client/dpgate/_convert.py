"""Protobuf messages to the client's public types (generated types stay inside)."""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import Iterable, Sequence
from decimal import Decimal

import polars as pl

from dpgate._types import (
    BiasFigure,
    BudgetInfo,
    ColumnInfo,
    ContributionBounds,
    DatasetInfo,
    DerivedOption,
    DroppedPatients,
    EarlierRelease,
    KeyValue,
    PeriodCap,
    PreviewResult,
    PublishedVersion,
    QueryResult,
    ReleaseInfo,
)
from dpgate_proto.v1 import query_pb2, types_pb2
from dpgate_shared.units import MEASURE_OF, plain, units_to_decimal

_ACCOUNTING = {types_pb2.ACCOUNTING_PURE_DP: "pure_dp", types_pb2.ACCOUNTING_ZCDP: "zcdp"}
_KINDS = {
    types_pb2.COLUMN_KIND_STRING: "string",
    types_pb2.COLUMN_KIND_INTEGER: "integer",
    types_pb2.COLUMN_KIND_DATE: "date",
}


def key_value(message: types_pb2.KeyValue) -> KeyValue | None:
    kind = message.WhichOneof("kind")
    if kind == "string_value":
        return message.string_value
    if kind == "int_value":
        return message.int_value
    if kind == "date_value":
        return dt.date.fromisoformat(message.date_value)
    return None


def dataset_info(message: types_pb2.DatasetSummary) -> DatasetInfo:
    return DatasetInfo(
        dataset_id=message.dataset_id,
        title=message.title,
        description=message.description,
        version=message.version,
        accounting=_ACCOUNTING.get(message.accounting, "unspecified"),
        max_contributions=message.max_contributions,
        period_start=dt.date.fromisoformat(message.period_start),
        period_end=dt.date.fromisoformat(message.period_end),
    )


_BOUND_KINDS = {
    types_pb2.CONTRIBUTION_BOUND_KIND_TOTAL_ROWS: "total_rows",
    types_pb2.CONTRIBUTION_BOUND_KIND_ROWS_PER_PERIOD: "rows_per_period",
    types_pb2.CONTRIBUTION_BOUND_KIND_PERIODS: "periods",
    types_pb2.CONTRIBUTION_BOUND_KIND_PRACTICE_PERIODS: "practice_periods",
}


def bias_figure(message: types_pb2.BiasFigure, version: str) -> BiasFigure:
    """A version's stored bias figure (`version` names it)."""
    if not message.released:
        return BiasFigure(version=version, released=False, note=message.note)
    return BiasFigure(
        version=version,
        released=True,
        counts=tuple(
            DroppedPatients(
                bound=_BOUND_KINDS.get(count.bound, "unspecified"),
                period=count.period or None,
                limit=count.limit,
                value=count.value,
                ci_low=count.ci_low,
                ci_high=count.ci_high,
            )
            for count in message.counts
        ),
        mechanism=message.mechanism,
        noise_scale=message.noise_scale,
        confidence_level=message.confidence_level,
        spend=spend(message.spend),
        accounting=accounting_name(message.spend),
    )


def published_version(
    dataset: types_pb2.DatasetSummary, figure: types_pb2.BiasFigure | None
) -> PublishedVersion:
    """A publish's result: the new version and the bias figure it released (if any)."""
    info = dataset_info(dataset)
    fields = {name: getattr(info, name) for name in DatasetInfo.__dataclass_fields__}
    return PublishedVersion(
        **fields, bias_figure=None if figure is None else bias_figure(figure, info.version)
    )


def contribution_bounds(message: query_pb2.ContributionBounds) -> ContributionBounds:
    return ContributionBounds(
        max_contributions=message.max_contributions,
        verified=message.verified,
        method=message.method,
        period_caps=tuple(
            PeriodCap(
                period=cap.period,
                rows=cap.rows or None,
                periods=cap.periods or None,
                practice_periods=cap.practice_periods or None,
            )
            for cap in message.period_caps
        ),
    )


def column_info(message: types_pb2.Column) -> ColumnInfo:
    values = tuple(v for v in (key_value(m) for m in message.values) if v is not None)
    return ColumnInfo(
        name=message.name,
        kind=_KINDS.get(message.kind, "unspecified"),
        public=message.visibility == types_pb2.VISIBILITY_PUBLIC,
        description=message.description,
        groupable=message.groupable,
        filterable=message.filterable,
        values=values,
        bounds=(message.bounds.low, message.bounds.high) if message.HasField("bounds") else None,
        summable=message.summable,
        key_table=message.key_table,
    )


def spend(message: types_pb2.Spend) -> Decimal:
    """Exact epsilon or rho from nano units."""
    return units_to_decimal(message.nano_units)


def accounting_name(message: types_pb2.Spend) -> str:
    return _ACCOUNTING.get(message.accounting, "unspecified")


def budget_info(message: types_pb2.Budget) -> BudgetInfo:
    return BudgetInfo(
        dataset_id=message.dataset_id,
        accounting=accounting_name(message.allocated),
        allocated=spend(message.allocated),
        spent=spend(message.spent),
        remaining=spend(message.remaining),
        expires_at=message.expires_at,
    )


def preview_result(message: query_pb2.PreviewQueryResponse) -> PreviewResult:
    accounting = accounting_name(message.spend)
    earlier = None
    if message.HasField("earlier_release"):
        found = message.earlier_release
        earlier = EarlierRelease(
            release_id=found.release_id,
            dataset_version=found.dataset_version,
            cost=spend(found.cost),
            shared=found.shared,
        )
    charge = spend(message.spend)
    derived = None
    if message.HasField("derived"):
        option = message.derived
        derived = DerivedOption(
            derived_from=option.derived_from,
            half_width=option.half_width,
            cells=option.cell_count,
            summed_cells=option.summed_cells,
        )
    return PreviewResult(
        spend=charge,
        accounting=accounting,
        half_width=message.half_width,
        confidence_level=message.confidence_level,
        cells=message.cell_count,
        mechanism=message.mechanism,
        noise_scale=message.noise_scale,
        notes=tuple(message.notes),
        earlier_release=earlier,
        warnings=() if earlier is None else (charged_again(earlier, charge, accounting),),
        derived=derived,
    )


def charged_again(earlier: EarlierRelease, charge: Decimal, accounting: str) -> str:
    """In words: the question was answered for you on an older version and is charged anew.

    Example:
        >>> earlier = EarlierRelease("rel_1", "v000003", Decimal("0.5"), shared=False)
        >>> charged_again(earlier, Decimal("0.5"), "pure_dp")  # doctest: +NORMALIZE_WHITESPACE
        'released to you on version v000003 for epsilon 0.5; the dataset has a new version,
        so this query will be charged epsilon 0.5 again'
    """
    measure = MEASURE_OF.get(accounting, "budget")
    then, now = (f"{measure} {plain(amount)}" for amount in (earlier.cost, charge))
    if earlier.shared:
        return (
            f"shared with you free on version {earlier.dataset_version} (released for {then});"
            f" the dataset has a new version, so this query will be charged {now}"
        )
    return (
        f"released to you on version {earlier.dataset_version} for {then}; the dataset has a"
        f" new version, so this query will be charged {now} again"
    )


def release_info(message: query_pb2.ReleaseSummary) -> ReleaseInfo:
    return ReleaseInfo(
        release_id=message.release_id,
        dataset_id=message.dataset_id,
        dataset_version=message.dataset_version,
        canonical_query=message.canonical_query,
        cost=spend(message.cost),
        created_at=message.created_at,
        derived_from=message.derived_from,
    )


def query_result(parts: Iterable[query_pb2.RunQueryResponse]) -> QueryResult:
    """Assemble the streamed header and cells into a result with a Polars frame.

    Arrow IPC pieces (what this client asks for) are joined and read in one call; per-cell
    batches (what a server before the columnar format sends) are gathered cell by cell.
    """
    header: query_pb2.ReleaseHeader | None = None
    pieces: list[bytes] = []
    batches: list[query_pb2.CellBatch] = []
    for part in parts:
        kind = part.WhichOneof("part")
        if kind == "header":
            header = part.header
        elif kind == "arrow_ipc":
            pieces.append(part.arrow_ipc)
        elif kind == "cells":
            batches.append(part.cells)
    if header is None:
        raise ValueError("the server sent no release header")
    if pieces:
        frame = pl.read_ipc(io.BytesIO(b"".join(pieces)), memory_map=False)
    else:
        frame = _frame_of_cells(header.group_by, batches)
    return QueryResult(
        frame=frame,
        release_id=header.release_id,
        dataset_id=header.dataset_id,
        dataset_version=header.dataset_version,
        group_by=tuple(header.group_by),
        mechanism=header.mechanism,
        noise_scale=header.noise_scale,
        confidence_level=header.confidence_level,
        charged=spend(header.charged),
        release_cost=spend(header.release_cost),
        remaining=spend(header.remaining),
        repeat=header.repeat,
        canonical_query=header.canonical_query,
        accounting=accounting_name(header.release_cost),
        derived_from=header.derived_from,
        bias_figure=bias_figure(header.bias_figure, header.dataset_version)
        if header.HasField("bias_figure")
        else None,
    )


def _frame_of_cells(
    group_by: Sequence[str], batches: Iterable[query_pb2.CellBatch]
) -> pl.DataFrame:
    keys: list[list[KeyValue | None]] = []
    values: list[int] = []
    lows: list[float] = []
    highs: list[float] = []
    summed: list[int] = []
    for batch in batches:
        for cell in batch.cells:
            keys.append([key_value(k) for k in cell.keys])
            values.append(cell.value)
            lows.append(cell.ci_low)
            highs.append(cell.ci_high)
            summed.append(cell.summed_cells)
    columns: dict[str, list[object]] = {
        name: [row[i] for row in keys] for i, name in enumerate(group_by)
    }
    frame = pl.DataFrame(
        {**columns, "value": values, "ci_low": lows, "ci_high": highs},
        schema_overrides={"value": pl.Int64, "ci_low": pl.Float64, "ci_high": pl.Float64},
    )
    if any(summed):  # a derived answer: how many released cells each row adds up
        frame = frame.with_columns(pl.Series("cells", summed, dtype=pl.Int64))
    return frame

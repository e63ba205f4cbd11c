"""Conversions between domain values and protobuf messages (no decisions here)."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from dpgate_proto.v1 import query_pb2, types_pb2
from dpgate_server.answers import Answer, RequesterPreview
from dpgate_server.api.errors import BadRequestError
from dpgate_server.ledger.model import Budget, DerivedRecord
from dpgate_server.queries import cell_table
from dpgate_server.queries.derivation import DerivePreference
from dpgate_server.queries.model import Aggregate, Filter, Query, Spend, SpendMeasure
from dpgate_server.spend import units_to_decimal
from dpgate_server.store.metadata import ColumnKind, ColumnSpec, KeyValue, Visibility
from dpgate_server.store.publish_records import BiasFigure, BoundKind
from dpgate_server.store.store import ContributionBound, DatasetVersion
from dpgate_server.vocabulary.accounting import Accounting
from dpgate_server.vocabulary.errors import ErrorReason
from dpgate_shared.confidence import DEFAULT_CONFIDENCE_LEVEL

ACCOUNTING_TO_PROTO = {
    Accounting.PURE_DP: types_pb2.ACCOUNTING_PURE_DP,
    Accounting.ZCDP: types_pb2.ACCOUNTING_ZCDP,
}
KIND_TO_PROTO = {
    ColumnKind.STRING: types_pb2.COLUMN_KIND_STRING,
    ColumnKind.INTEGER: types_pb2.COLUMN_KIND_INTEGER,
    ColumnKind.DATE: types_pb2.COLUMN_KIND_DATE,
}
VISIBILITY_TO_PROTO = {
    Visibility.PUBLIC: types_pb2.VISIBILITY_PUBLIC,
    Visibility.PRIVATE: types_pb2.VISIBILITY_PRIVATE,
}


def key_value_to_proto(value: KeyValue | None) -> types_pb2.KeyValue:
    """A public value on the wire; None (a null in a public table) is an empty KeyValue."""
    if value is None:
        return types_pb2.KeyValue()
    if isinstance(value, bool):
        return types_pb2.KeyValue(int_value=int(value))
    if isinstance(value, str):
        return types_pb2.KeyValue(string_value=value)
    if isinstance(value, int):
        return types_pb2.KeyValue(int_value=value)
    if isinstance(value, dt.date):
        return types_pb2.KeyValue(date_value=value.isoformat())
    raise TypeError(f"unsupported key value {value!r}")


def column_to_proto(spec: ColumnSpec) -> types_pb2.Column:
    column = types_pb2.Column(
        name=spec.name,
        kind=KIND_TO_PROTO[spec.kind],
        visibility=VISIBILITY_TO_PROTO[spec.visibility],
        description=spec.description,
        groupable=spec.groupable,
        filterable=spec.filterable,
        values=[key_value_to_proto(v) for v in spec.values or ()],
        summable=spec.summable,
        key_table=spec.key_table or "",
    )
    if spec.bounds is not None:
        column.bounds.CopyFrom(types_pb2.Bounds(low=spec.bounds[0], high=spec.bounds[1]))
    return column


def dataset_summary_to_proto(version: DatasetVersion) -> types_pb2.DatasetSummary:
    meta = version.metadata
    return types_pb2.DatasetSummary(
        dataset_id=meta.dataset_id,
        title=meta.title,
        description=meta.description,
        version=version.version,
        accounting=ACCOUNTING_TO_PROTO[meta.accounting],
        max_contributions=meta.max_contributions,
        period_start=meta.period_start.isoformat(),
        period_end=meta.period_end.isoformat(),
    )


def describe_to_proto(
    version: DatasetVersion, public_tables: Sequence[tuple[str, Sequence[str]]]
) -> query_pb2.DescribeDatasetResponse:
    reply = query_pb2.DescribeDatasetResponse(
        dataset=dataset_summary_to_proto(version),
        columns=[column_to_proto(c) for c in version.metadata.columns],
        public_tables=[
            types_pb2.PublicTableInfo(name=name, columns=list(columns))
            for name, columns in public_tables
        ],
    )
    if version.manifest.bound is not None:
        reply.bounds.CopyFrom(bounds_to_proto(version.manifest.bound))
    if version.manifest.bias_figure is not None:
        reply.bias_figure.CopyFrom(bias_figure_to_proto(version.manifest.bias_figure))
    return reply


BOUND_KIND_TO_PROTO = {
    BoundKind.TOTAL_ROWS: types_pb2.CONTRIBUTION_BOUND_KIND_TOTAL_ROWS,
    BoundKind.ROWS_PER_PERIOD: types_pb2.CONTRIBUTION_BOUND_KIND_ROWS_PER_PERIOD,
    BoundKind.PERIODS: types_pb2.CONTRIBUTION_BOUND_KIND_PERIODS,
    BoundKind.PRACTICE_PERIODS: types_pb2.CONTRIBUTION_BOUND_KIND_PRACTICE_PERIODS,
}


def bias_figure_to_proto(figure: BiasFigure) -> types_pb2.BiasFigure:
    """The figure stored with a version, as released at publish (never recomputed)."""
    if not figure.released:
        return types_pb2.BiasFigure(released=False, note=figure.note)
    return types_pb2.BiasFigure(
        released=True,
        counts=[
            types_pb2.DroppedPatients(
                bound=BOUND_KIND_TO_PROTO[count.bound],
                period=count.period or "",
                limit=count.limit,
                value=count.value,
                ci_low=float(count.value - count.half_width),
                ci_high=float(count.value + count.half_width),
            )
            for count in figure.counts
        ],
        mechanism=figure.mechanism,
        noise_scale=figure.noise_scale,
        confidence_level=figure.confidence_level,
        spend=spend_to_proto(figure.accounting, figure.spend_units),
    )


def bounds_to_proto(bound: ContributionBound) -> query_pb2.ContributionBounds:
    """A version's recorded bounds (public policy; the seed of its row choice stays out)."""
    return query_pb2.ContributionBounds(
        max_contributions=bound.max_contributions,
        verified=bound.verified,
        method=bound.method,
        period_caps=[
            query_pb2.PeriodCap(
                period=cap.period,
                rows=cap.rows or 0,
                periods=cap.periods or 0,
                practice_periods=cap.practice_periods or 0,
            )
            for cap in bound.period_bounds.caps
        ],
    )


def public_rows_to_proto(rows: Iterable[Sequence[KeyValue | None]]) -> list[query_pb2.PublicRow]:
    return [query_pb2.PublicRow(values=[key_value_to_proto(v) for v in row]) for row in rows]


_OPS = {
    query_pb2.FILTER_OPERATOR_EQ: "=",
    query_pb2.FILTER_OPERATOR_NE: "!=",
    query_pb2.FILTER_OPERATOR_LT: "<",
    query_pb2.FILTER_OPERATOR_LE: "<=",
    query_pb2.FILTER_OPERATOR_GT: ">",
    query_pb2.FILTER_OPERATOR_GE: ">=",
    query_pb2.FILTER_OPERATOR_IN: "in",
}
CELLS_PER_MESSAGE = 4096
"""Cells per streamed message: about 100-200 kB, far below the message size limit."""
ARROW_BYTES_PER_MESSAGE = 1 << 20
"""Largest Arrow IPC piece per message: well inside gRPC's default 4 MiB receive limit."""


def key_value_from_proto(message: types_pb2.KeyValue, where: str) -> KeyValue:
    """A filter operand; a malformed one is refused naming where it is."""
    kind = message.WhichOneof("kind")
    if kind == "string_value":
        return message.string_value
    if kind == "int_value":
        return message.int_value
    if kind == "date_value":
        try:
            return dt.date.fromisoformat(message.date_value)
        except ValueError:
            raise BadRequestError(
                ErrorReason.BAD_VALUE,
                f"{where}: dates are YYYY-MM-DD, not {message.date_value!r}",
                where,
            ) from None
    raise BadRequestError(
        ErrorReason.BAD_VALUE, f"{where}: the value is empty; set one of its kinds", where
    )


def query_from_proto(message: query_pb2.Query) -> Query:
    """The domain query; everything beyond message shape is checked by the engine."""
    function = message.aggregate.function
    if function == query_pb2.AGGREGATE_FUNCTION_COUNT:
        aggregate = Aggregate.count()
    elif function == query_pb2.AGGREGATE_FUNCTION_SUM:
        aggregate = Aggregate.sum(message.aggregate.column)
    else:
        aggregate = Aggregate(_enum_name(query_pb2.AggregateFunction, function))
    filters = tuple(
        Filter(
            column=f.column,
            op=_OPS.get(f.operator, _enum_name(query_pb2.FilterOperator, f.operator)),
            values=tuple(
                key_value_from_proto(v, f"filters[{i}].values[{j}]") for j, v in enumerate(f.values)
            ),
        )
        for i, f in enumerate(message.filters)
    )
    spend, target = _spend_from_proto(message)
    return Query(
        dataset_id=message.dataset_id,
        aggregate=aggregate,
        filters=filters,
        group_by=tuple(message.group_by),
        spend=spend,
        target_half_width=target,
        confidence_level=message.confidence_level or DEFAULT_CONFIDENCE_LEVEL,
        max_contributions=message.max_contributions or None,
    )


_MEASURE_OF = {
    types_pb2.ACCOUNTING_PURE_DP: SpendMeasure.EPSILON,
    types_pb2.ACCOUNTING_ZCDP: SpendMeasure.RHO,
}


def _spend_from_proto(message: query_pb2.Query) -> tuple[Spend | None, float | None]:
    """The exact spend, or the target accuracy; (None, None) when the query has neither.

    `amount` is the spend's one exact form. The deprecated doubles `epsilon` and `rho`
    (sent by clients of the previous version) are still read, each as the shortest
    decimal that prints it (0.1 as 0.1), so an old client is charged what it wrote.
    """
    kind = message.WhichOneof("spend")
    if kind == "amount":
        measure = _MEASURE_OF.get(message.amount.accounting)
        if measure is None:
            raise BadRequestError(
                ErrorReason.BAD_SPEND,
                "amount.accounting must be ACCOUNTING_PURE_DP (an epsilon) or "
                "ACCOUNTING_ZCDP (a rho); it names what the amount measures",
                "amount.accounting",
            )
        return Spend(measure, units_to_decimal(message.amount.nano_units)), None
    if kind == "epsilon":
        return Spend.epsilon(message.epsilon), None
    if kind == "rho":
        return Spend.rho(message.rho), None
    if kind == "target_half_width":
        return None, message.target_half_width
    return None, None


def _enum_name(enum: Any, number: int) -> str:
    """The enum value's name, or its number for one this server does not know.

    Proto3 enums are open: a newer or hostile client may send any int32, and the validator
    must refuse it with INVALID_ARGUMENT rather than fail converting it.
    """
    try:
        return str(enum.Name(number))
    except ValueError:
        return f"unknown value {number}"


def spend_to_proto(accounting: Accounting | str | None, units: int) -> types_pb2.Spend:
    """An amount on the wire, the one way every amount leaves the server.

    No accounting (an audit event without a dataset) leaves the unit unspecified.
    """
    if accounting is None:
        return types_pb2.Spend(nano_units=units)
    return types_pb2.Spend(accounting=ACCOUNTING_TO_PROTO[Accounting(accounting)], nano_units=units)


def derive_preference_from_proto(
    value: query_pb2.DerivePreference.ValueType,
) -> DerivePreference:
    """Unspecified (a client from before derived answers) means a fresh release."""
    preference = _DERIVE_PREFERENCES.get(value)
    if preference is None:
        raise BadRequestError(
            ErrorReason.BAD_VALUE,
            f"derive {value} is not a DerivePreference; use DERIVE_PREFERENCE_FRESH, "
            "DERIVE_PREFERENCE_IF_AS_ACCURATE or DERIVE_PREFERENCE_IF_ANY",
            "derive",
        )
    return preference


_DERIVE_PREFERENCES = {
    query_pb2.DERIVE_PREFERENCE_UNSPECIFIED: DerivePreference.FRESH,
    query_pb2.DERIVE_PREFERENCE_FRESH: DerivePreference.FRESH,
    query_pb2.DERIVE_PREFERENCE_IF_AS_ACCURATE: DerivePreference.IF_AS_ACCURATE,
    query_pb2.DERIVE_PREFERENCE_IF_ANY: DerivePreference.IF_ANY,
}


def derived_summary_to_proto(record: DerivedRecord) -> query_pb2.ReleaseSummary:
    """A derived answer in a listing: its question, its source, cost zero."""
    accounting = Accounting(json.loads(record.canonical_query)["accounting"])
    return query_pb2.ReleaseSummary(
        release_id=record.derived_id,
        dataset_id=record.dataset_id,
        dataset_version=record.dataset_version,
        canonical_query=record.canonical_query,
        cost=spend_to_proto(accounting, 0),
        created_at=record.created_at.isoformat(),
        derived_from=record.source_release_id,
    )


def preview_to_proto(requester_preview: RequesterPreview) -> query_pb2.PreviewQueryResponse:
    preview = requester_preview.preview
    notes = [preview.truncation_note] if preview.truncation_note else []
    message = query_pb2.PreviewQueryResponse(
        spend=spend_to_proto(preview.accounting, preview.spend_units),
        half_width=float(preview.half_width),
        confidence_level=preview.confidence_level,
        cell_count=preview.cells,
        mechanism=preview.mechanism.value,
        noise_scale=preview.noise_scale,
        notes=notes,
    )
    derived = requester_preview.derived
    if derived is not None:
        message.derived.CopyFrom(
            query_pb2.DerivedOption(
                derived_from=derived.source_release_id,
                half_width=float(derived.half_width),
                cell_count=derived.release.cell_count,
                summed_cells=derived.most_cells,
            )
        )
    earlier = requester_preview.earlier_release
    if earlier is not None:
        message.earlier_release.CopyFrom(
            query_pb2.EarlierRelease(
                release_id=earlier.release_id,
                dataset_version=earlier.dataset_version,
                cost=spend_to_proto(preview.accounting, earlier.cost_units),
                shared=earlier.shared,
            )
        )
    return message


def answer_to_proto(
    answer: Answer,
    cell_format: query_pb2.CellFormat.ValueType,
    bias_figure: BiasFigure | None = None,
) -> Iterator[query_pb2.RunQueryResponse]:
    """The header (with the version's stored `bias_figure`, if any), then the cells as Arrow
    IPC pieces, or per-cell batches if not asked so.

    The Arrow pieces are the release's stored table as it is (no per-cell work here); the
    per-cell form is what clients before the columnar format read, and costs a Python loop.
    """
    release = answer.release
    header = query_pb2.ReleaseHeader(
        release_id=answer.release_id,
        dataset_id=release.dataset_id,
        dataset_version=release.dataset_version,
        group_by=list(release.group_by),
        mechanism=release.mechanism.value,
        noise_scale=release.noise_scale,
        confidence_level=release.confidence_level,
        charged=spend_to_proto(release.accounting, answer.charged_units),
        remaining=spend_to_proto(release.accounting, answer.remaining_units),
        repeat=answer.repeat,
        cell_count=release.cell_count,
        canonical_query=release.query.to_json(),
        release_cost=spend_to_proto(release.accounting, release.cost_units),
        derived_from=answer.derived_from or "",
    )
    if bias_figure is not None:
        header.bias_figure.CopyFrom(bias_figure_to_proto(bias_figure))
    yield query_pb2.RunQueryResponse(header=header)
    if cell_format == query_pb2.CELL_FORMAT_ARROW_IPC:
        table = release.table
        for start in range(0, len(table), ARROW_BYTES_PER_MESSAGE):
            yield query_pb2.RunQueryResponse(
                arrow_ipc=table[start : start + ARROW_BYTES_PER_MESSAGE]
            )
        return
    frame = release.frame()
    summed = frame.columns[-1] == cell_table.SUMMED_CELLS
    yield from _cell_batches(frame.iter_rows(), len(release.group_by), summed=summed)


def _cell_batches(
    rows: Iterator[tuple[Any, ...]], key_count: int, *, summed: bool = False
) -> Iterator[query_pb2.RunQueryResponse]:
    """Per-cell messages; `summed`: the rows end with a derived answer's cell counts."""
    batch: list[query_pb2.Cell] = []
    for row in rows:
        batch.append(
            query_pb2.Cell(
                keys=[key_value_to_proto(k) for k in row[:key_count]],
                value=row[key_count],
                ci_low=row[key_count + 1],
                ci_high=row[key_count + 2],
                summed_cells=row[key_count + 3] if summed else 0,
            )
        )
        if len(batch) == CELLS_PER_MESSAGE:
            yield query_pb2.RunQueryResponse(cells=query_pb2.CellBatch(cells=batch))
            batch = []
    if batch:
        yield query_pb2.RunQueryResponse(cells=query_pb2.CellBatch(cells=batch))


def budget_to_proto(budget: Budget, accounting: Accounting) -> types_pb2.Budget:
    return types_pb2.Budget(
        dataset_id=budget.dataset_id,
        allocated=spend_to_proto(accounting, budget.granted_units),
        spent=spend_to_proto(accounting, budget.spent_units),
        remaining=spend_to_proto(accounting, budget.remaining_units),
        expires_at="" if budget.expires_at is None else budget.expires_at.isoformat(),
    )

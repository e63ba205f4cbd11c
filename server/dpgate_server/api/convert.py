"""Conversions between domain values and protobuf messages (no decisions here)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence

from dpgate._proto.dpgate.v1 import query_pb2, types_pb2

from dpgate_server.data.metadata import (
    Accounting,
    ColumnKind,
    ColumnSpec,
    KeyValue,
    Visibility,
)
from dpgate_server.data.store import DatasetVersion

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
    return query_pb2.DescribeDatasetResponse(
        dataset=dataset_summary_to_proto(version),
        columns=[column_to_proto(c) for c in version.metadata.columns],
        public_tables=[
            types_pb2.PublicTableInfo(name=name, columns=list(columns))
            for name, columns in public_tables
        ],
    )


def public_rows_to_proto(rows: Iterable[Sequence[KeyValue | None]]) -> list[query_pb2.PublicRow]:
    return [query_pb2.PublicRow(values=[key_value_to_proto(v) for v in row]) for row in rows]

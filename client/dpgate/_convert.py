"""Protobuf messages to the client's public types (generated types stay inside)."""

from __future__ import annotations

import datetime as dt

from dpgate._proto.dpgate.v1 import types_pb2
from dpgate._types import ColumnInfo, DatasetInfo, KeyValue

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

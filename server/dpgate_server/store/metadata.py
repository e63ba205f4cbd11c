"""Dataset metadata: the public policy that says what may be asked of a dataset.

Metadata is written from public knowledge (published category sets, the public practice
table, the declared clamp ranges and `max_contributions`), never derived from the rows.
That is what makes it safe to show to any requester: nothing here depends on a patient.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from dpgate_server.store.period_bounds import PeriodBounds
from dpgate_server.vocabulary.accounting import Accounting

KeyValue = str | int | dt.date
"""A value a public column may take: a category label, a small integer or a date."""


class ColumnKind(StrEnum):
    """Logical type of a column, as a requester sees it."""

    STRING = "string"
    INTEGER = "integer"
    DATE = "date"


class Visibility(StrEnum):
    """Whether a column's values are public knowledge (usable as keys) or private."""

    PUBLIC = "public"
    PRIVATE = "private"


@dataclass(frozen=True, slots=True)
class ColumnSpec:
    """One column of a dataset's private table and what requesters may do with it.

    Attributes:
        name: column name in the Parquet files.
        kind: logical type.
        visibility: PUBLIC columns have a public value set; PRIVATE ones are never
            grouped or filtered on and never returned.
        description: one line for planners.
        groupable: may appear in a group-by (needs a public key set).
        filterable: may appear in a filter.
        values: the public value set, when it is small enough to list (categories,
            practice codes, weeks). None for numeric ranges.
        bounds: for INTEGER columns, the public inclusive range; a SUM clamps to it.
        summable: may be the argument of SUM (INTEGER columns with bounds only).
        key_table: name of the public table whose rows hold this column's keys. Two
            group-by columns with the same key table are nested (practice within ICB):
            their keys are that table's actual pairs, not a cross product.
    """

    name: str
    kind: ColumnKind
    visibility: Visibility
    description: str
    groupable: bool = False
    filterable: bool = False
    values: tuple[KeyValue, ...] | None = None
    bounds: tuple[int, int] | None = None
    summable: bool = False
    key_table: str | None = None

    def __post_init__(self) -> None:
        if self.visibility is Visibility.PRIVATE and (self.groupable or self.filterable):
            raise ValueError(f"private column {self.name!r} cannot be groupable or filterable")
        if self.groupable and self.values is None:
            raise ValueError(f"groupable column {self.name!r} needs a public value set")
        if self.summable and (self.kind is not ColumnKind.INTEGER or self.bounds is None):
            raise ValueError(f"summable column {self.name!r} must be an integer with bounds")
        if self.bounds is not None and self.bounds[0] > self.bounds[1]:
            raise ValueError(f"column {self.name!r} has bounds {self.bounds} with low > high")


@dataclass(frozen=True, slots=True)
class DatasetMetadata:
    """Everything public about a dataset: its columns, privacy unit and accounting.

    Attributes:
        dataset_id: stable identifier requesters name in queries.
        title: human title.
        description: what the dataset holds, for planners.
        privacy_unit: the column identifying a person (never grouped, filtered or returned).
        max_contributions: the most rows one person may contribute to any query.
        accounting: pure DP (epsilon) or zCDP (rho).
        max_rows: a public ceiling on the table's row count (OpenDP margin), a policy
            constant, never the observed count.
        period_start: first day covered (inclusive).
        period_end: last day covered (inclusive).
        columns: the private table's columns.
        public_tables: names of the public tables shipped with every version.
        period_bounds: per-period caps enforced at publish with `max_contributions`
            (store/period_bounds.py); empty for a dataset bounded by the total alone.
    """

    dataset_id: str
    title: str
    description: str
    privacy_unit: str
    max_contributions: int
    accounting: Accounting
    max_rows: int
    period_start: dt.date
    period_end: dt.date
    columns: tuple[ColumnSpec, ...]
    public_tables: tuple[str, ...] = field(default=())
    period_bounds: PeriodBounds = field(default_factory=PeriodBounds)

    def __post_init__(self) -> None:
        if self.max_contributions < 1:
            raise ValueError("max_contributions must be at least 1")
        if not 1 <= self.max_rows <= 4_294_967_295:
            raise ValueError("max_rows must fit OpenDP's u32 margin")
        names = [c.name for c in self.columns]
        for cap in self.period_bounds.caps:
            if cap.period not in names:
                raise ValueError(f"a {cap.period} bound needs a {cap.period} column")
        if len(set(names)) != len(names):
            raise ValueError("column names must be unique")
        if self.privacy_unit not in names:
            raise ValueError(f"privacy unit {self.privacy_unit!r} is not a column")
        if self.column(self.privacy_unit).visibility is not Visibility.PRIVATE:  # type: ignore[union-attr]
            raise ValueError("the privacy unit column must be private")

    def column(self, name: str) -> ColumnSpec | None:
        """The column called `name`, or None."""
        for spec in self.columns:
            if spec.name == name:
                return spec
        return None

    def to_json(self) -> str:
        """A stable JSON form (sorted keys), stored beside each dataset version."""
        return json.dumps(_metadata_to_dict(self), sort_keys=True, indent=1)

    @staticmethod
    def from_json(text: str) -> DatasetMetadata:
        """Parse the form written by `to_json`."""
        return _metadata_from_dict(json.loads(text))


def _value_to_json(value: KeyValue) -> Any:
    if isinstance(value, dt.date):
        return {"date": value.isoformat()}
    return value


def _value_from_json(raw: Any) -> KeyValue:
    if isinstance(raw, dict):
        return dt.date.fromisoformat(raw["date"])
    if isinstance(raw, bool) or not isinstance(raw, str | int):
        raise ValueError(f"unsupported key value {raw!r}")
    return raw


def _column_to_dict(spec: ColumnSpec) -> dict[str, Any]:
    return {
        "name": spec.name,
        "kind": spec.kind.value,
        "visibility": spec.visibility.value,
        "description": spec.description,
        "groupable": spec.groupable,
        "filterable": spec.filterable,
        "values": None if spec.values is None else [_value_to_json(v) for v in spec.values],
        "bounds": None if spec.bounds is None else list(spec.bounds),
        "summable": spec.summable,
        "key_table": spec.key_table,
    }


def _column_from_dict(raw: dict[str, Any]) -> ColumnSpec:
    values = raw.get("values")
    bounds = raw.get("bounds")
    return ColumnSpec(
        name=raw["name"],
        kind=ColumnKind(raw["kind"]),
        visibility=Visibility(raw["visibility"]),
        description=raw["description"],
        groupable=bool(raw["groupable"]),
        filterable=bool(raw["filterable"]),
        values=None if values is None else tuple(_value_from_json(v) for v in values),
        bounds=None if bounds is None else (int(bounds[0]), int(bounds[1])),
        summable=bool(raw["summable"]),
        key_table=raw.get("key_table"),
    )


def _metadata_to_dict(meta: DatasetMetadata) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "dataset_id": meta.dataset_id,
        "title": meta.title,
        "description": meta.description,
        "privacy_unit": meta.privacy_unit,
        "max_contributions": meta.max_contributions,
        "accounting": meta.accounting.value,
        "max_rows": meta.max_rows,
        "period_start": meta.period_start.isoformat(),
        "period_end": meta.period_end.isoformat(),
        "columns": [_column_to_dict(c) for c in meta.columns],
        "public_tables": list(meta.public_tables),
    }
    if meta.period_bounds:  # absent for datasets bounded by the total alone, as before
        raw["period_bounds"] = meta.period_bounds.to_dict()
    return raw


def _metadata_from_dict(raw: dict[str, Any]) -> DatasetMetadata:
    return DatasetMetadata(
        dataset_id=raw["dataset_id"],
        title=raw["title"],
        description=raw["description"],
        privacy_unit=raw["privacy_unit"],
        max_contributions=int(raw["max_contributions"]),
        accounting=Accounting(raw["accounting"]),
        max_rows=int(raw["max_rows"]),
        period_start=dt.date.fromisoformat(raw["period_start"]),
        period_end=dt.date.fromisoformat(raw["period_end"]),
        columns=tuple(_column_from_dict(c) for c in raw["columns"]),
        public_tables=tuple(raw.get("public_tables", ())),
        period_bounds=PeriodBounds.from_dict(raw.get("period_bounds")),
    )

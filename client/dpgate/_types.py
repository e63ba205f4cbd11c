"""Public value types of the client: frozen dataclasses, never generated protobuf types."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

KeyValue = str | int | dt.date
"""A public value: a category label, an integer or a date."""


@dataclass(frozen=True, slots=True)
class DatasetInfo:
    """A dataset and its current version."""

    dataset_id: str
    title: str
    description: str
    version: str
    accounting: str
    """"pure_dp" (spend epsilon) or "zcdp" (spend rho)."""
    max_contributions: int
    period_start: dt.date
    period_end: dt.date


@dataclass(frozen=True, slots=True)
class ColumnInfo:
    """A column and what may be asked of it."""

    name: str
    kind: str
    """"string", "integer" or "date"."""
    public: bool
    description: str
    groupable: bool
    filterable: bool
    values: tuple[KeyValue, ...]
    """The public value set (empty when the column has none)."""
    bounds: tuple[int, int] | None
    """For integer columns, the public range a SUM clamps to."""
    summable: bool
    key_table: str


@dataclass(frozen=True, slots=True)
class DatasetDescription:
    """Everything public about a dataset."""

    dataset: DatasetInfo
    columns: tuple[ColumnInfo, ...]
    public_tables: dict[str, tuple[str, ...]]
    """Public table names and their columns."""

    def column(self, name: str) -> ColumnInfo:
        """The column called `name`; raises KeyError naming the columns there are."""
        for column in self.columns:
            if column.name == name:
                return column
        raise KeyError(f"no column {name!r}; columns: {', '.join(c.name for c in self.columns)}")

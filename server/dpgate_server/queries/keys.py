"""Public key sets: the cells a grouped release has, whatever the data holds.

Every key in the public set appears in the answer, noised, whether or not the data has it
(so the set of cells reveals nothing). Keys come from public sources only:

- group-by columns that share a `key_table` (practice within ICB, week with month) take
  that public table's actual distinct combinations, not a cross product;
- other columns (categories, hour) take the metadata's published values;
- the pieces are cross-joined (practice x week).

Filters on a group-by column also restrict its keys (a filter `mode = Telephone` grouped by
mode has one cell, not five): the keys are public and the filter literals were checked,
so this is post-processing of public data. Key frames built from public tables are
`scan_parquet` plans (serialized as a path); metadata values become small in-memory frames.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import polars as pl

from dpgate_server.queries.expressions import conjunction
from dpgate_server.queries.model import CanonicalFilter
from dpgate_server.store.metadata import ColumnKind, DatasetMetadata
from dpgate_server.store.store import DatasetVersion

_KIND_DTYPES: dict[ColumnKind, pl.DataType] = {
    ColumnKind.STRING: pl.String(),
    ColumnKind.INTEGER: pl.Int64(),
    ColumnKind.DATE: pl.Date(),
}


@dataclass(frozen=True, slots=True)
class KeySets:
    """Where the public keys of one dataset version (or of its metadata alone) come from.

    Attributes:
        metadata: the dataset's public policy.
        public_table: scan of a public table by name, or None if the version has none.
        dtypes: the private table's column types, so key columns join without casts
            in the data; None when only counting (preview from metadata).
    """

    metadata: DatasetMetadata
    public_table: Callable[[str], pl.LazyFrame | None]
    dtypes: Mapping[str, pl.DataType] | None

    @staticmethod
    def of_version(version: DatasetVersion, dtypes: Mapping[str, pl.DataType]) -> KeySets:
        def table(name: str) -> pl.LazyFrame | None:
            try:
                return version.scan_public_table(name)
            except KeyError:
                return None

        return KeySets(version.metadata, table, dtypes)

    @staticmethod
    def of_metadata(metadata: DatasetMetadata) -> KeySets:
        """Keys from published values only: columns sharing a table count as a cross product."""
        return KeySets(metadata, lambda _name: None, None)

    def frame(
        self, group_by: tuple[str, ...], filters: tuple[CanonicalFilter, ...]
    ) -> pl.LazyFrame:
        """One row per cell, columns `group_by` (in that order)."""
        pieces = self._pieces(group_by, filters)
        joined = functools.reduce(lambda a, b: a.join(b, how="cross"), pieces)
        return joined.select(group_by)

    def count(self, group_by: tuple[str, ...], filters: tuple[CanonicalFilter, ...]) -> int:
        """Number of cells, without materializing the cross product."""
        total = 1
        for piece in self._pieces(group_by, filters):
            total *= int(piece.select(pl.len()).collect().item())
        return total

    def _pieces(
        self, group_by: tuple[str, ...], filters: tuple[CanonicalFilter, ...]
    ) -> list[pl.LazyFrame]:
        by_table: dict[str, list[str]] = {}
        pieces: list[pl.LazyFrame] = []
        for name in group_by:
            spec = self.metadata.column(name)
            if spec is None:
                raise KeyError(name)
            if spec.key_table is not None and self.public_table(spec.key_table) is not None:
                by_table.setdefault(spec.key_table, []).append(name)
            else:
                pieces.append(self._from_values(name))
        for table, names in by_table.items():
            scan = self.public_table(table)
            assert scan is not None
            pieces.append(scan.select(names).unique().select(self._cast(names)))
        restricted = []
        for piece in pieces:
            present = set(piece.collect_schema().names())
            condition = conjunction(tuple(f for f in filters if f.column in present))
            restricted.append(piece if condition is None else piece.filter(condition))
        return restricted

    def _from_values(self, name: str) -> pl.LazyFrame:
        spec = self.metadata.column(name)
        assert spec is not None
        assert spec.values is not None
        frame = pl.LazyFrame({name: list(spec.values)}, schema={name: _KIND_DTYPES[spec.kind]})
        return frame.select(self._cast([name]))

    def _cast(self, columns: list[str]) -> list[pl.Expr]:
        if self.dtypes is None:
            return [pl.col(c) for c in columns]
        return [pl.col(c).cast(self.dtypes[c]) for c in columns]

"""Where a new version's rows come from, read one practice group at a time.

Each included practice's rows come from its staged extract (a snapshot taken under the
governance lock, so uploads during a publish neither block nor change what is published)
or else are carried forward from the current version. Rows are read as Arrow tables with
the staged columns, strings dictionary-encoded as Parquet stores them (codes, not strings:
cheap to hash, sort and write).

The current version's month files are sorted by practice code, so carried rows are read
with one cursor per month file that moves forward group by group: every row group is
decoded once, and at most one partly used row group per month waits in memory.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from dpgate_server.governance.ingest import STAGED_COLUMNS
from dpgate_server.governance.publish_plan import PracticeGroup
from dpgate_server.store.coded_rows import CodedRows, Labels

PRACTICE = "practice_code"
STRING_COLUMNS: tuple[str, ...] = tuple(
    name for name, kind in STAGED_COLUMNS.items() if kind == pl.String()
)
STAGED_ARROW_SCHEMA = pa.schema(
    [
        (
            name,
            pa.dictionary(pa.int32(), pa.string())
            if name in STRING_COLUMNS
            else pl.DataFrame(schema={name: kind}).to_arrow().schema.field(name).type,
        )
        for name, kind in STAGED_COLUMNS.items()
    ]
)
"""A staged row as publishing reads it: STAGED_COLUMNS, strings as dictionaries."""
STAGED_NAMES: tuple[str, ...] = tuple(STAGED_ARROW_SCHEMA.names)
"""The columns a row's rank hash covers, in order."""


class UnsortedVersionError(ValueError):
    """The current version's month files are not sorted by practice code."""


def snapshot_staged(staged: Mapping[str, Path], folder: Path) -> dict[str, Path]:
    """Hard links (copies across filesystems) of the staged files, by practice code.

    Hold the governance lock: a staged file is replaced by rename, so the link keeps the
    rows as they were at this moment whatever uploads follow.
    """
    folder.mkdir(parents=True, exist_ok=True)
    snapshot = {}
    for code, source in staged.items():
        target = folder / f"{code}.parquet"
        try:
            os.link(source, target)
        except OSError:
            shutil.copyfile(source, target)
        snapshot[code] = target
    return snapshot


def read_staged(path: Path) -> pa.Table:
    """A staged snapshot's rows."""
    file = pq.ParquetFile(path, read_dictionary=list(STRING_COLUMNS))
    return file.read(columns=STAGED_ARROW_SCHEMA.names).cast(STAGED_ARROW_SCHEMA)


def count_carried_rows(base_paths: Sequence[Path], carried: frozenset[str]) -> dict[str, int]:
    """Rows per carried practice in the current version (reads the practice column only)."""
    if not carried or not base_paths:
        return {}
    counts = (
        pl.scan_parquet([str(p) for p in base_paths])
        .select(PRACTICE)
        .filter(pl.col(PRACTICE).is_in(sorted(carried)))
        .group_by(PRACTICE)
        .len()
        .collect(engine="streaming")
    )
    return {str(code): int(rows) for code, rows in counts.iter_rows()}


def staged_rows(path: Path) -> int:
    return int(pq.ParquetFile(path).metadata.num_rows)


class PublishSources:
    """The rows of every included practice, group by group, in code order."""

    def __init__(
        self,
        snapshots: Mapping[str, Path],
        carried: frozenset[str],
        base_paths: Sequence[Path],
    ) -> None:
        self._snapshots = dict(snapshots)
        self._carried = carried
        self._base_paths = list(base_paths)

    def groups(
        self, groups: Sequence[PracticeGroup], labels: Labels
    ) -> Iterator[tuple[PracticeGroup, CodedRows]]:
        """Each group with its rows (staged columns, strings coded in `labels`); a fresh
        pass over the sources."""
        cursors = [_SortedCursor(path) for path in self._base_paths] if self._carried else []
        for group in groups:
            parts = [read_staged(self._snapshots[c]) for c in group.codes if c in self._snapshots]
            wanted = frozenset(group.codes) & self._carried
            for cursor in cursors:
                parts.extend(cursor.take_through(group.last, wanted))
            rows = CodedRows.from_arrow(_concat(parts), labels)
            del parts  # the Arrow tables are not kept while the caller works on `rows`
            yield group, rows


class _SortedCursor:
    """Reads one month file, sorted by practice code, forward in code ranges."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._file = pq.ParquetFile(path, read_dictionary=list(STRING_COLUMNS))
        self._column = self._file.schema_arrow.get_field_index(PRACTICE)
        self._next_group = 0
        self._pending: pa.Table | None = None
        self._last_code = ""

    def take_through(self, last: str, wanted: frozenset[str]) -> list[pa.Table]:
        """Rows of practices in `wanted` up to code `last` (inclusive), consuming the file
        up to there."""
        taken: list[pa.Table] = []
        while True:
            table = self._pending if self._pending is not None else self._read_next(last)
            self._pending = None
            if table is None:
                return taken
            labels, indices = _dictionary_codes(table.column(PRACTICE))
            within = (labels <= last)[indices]
            split = int(within.sum())
            if not within[:split].all():
                raise UnsortedVersionError(
                    f"{self._path.name} is not sorted by practice code; publish from a "
                    "version written by dpgate"
                )
            if split and labels[indices[0]] < self._last_code:
                raise UnsortedVersionError(f"{self._path.name} is not sorted by practice code")
            if split < table.num_rows:
                self._pending = table.slice(split)
            if split:
                self._last_code = str(labels[indices[split - 1]])
                keep = np.isin(labels, sorted(wanted))[indices[:split]]
                if keep.any():
                    taken.append(table.slice(0, split).filter(pa.array(keep)))
            if self._pending is not None:
                return taken

    def _read_next(self, last: str) -> pa.Table | None:
        """The next row group, unless its statistics show it starts after `last`."""
        if self._next_group >= self._file.num_row_groups:
            return None
        meta = self._file.metadata.row_group(self._next_group).column(self._column)
        stats = meta.statistics
        if stats is not None and stats.has_min_max and str(stats.min) > last:
            return None
        table = self._file.read_row_group(self._next_group, columns=STAGED_ARROW_SCHEMA.names)
        self._next_group += 1
        return table.cast(STAGED_ARROW_SCHEMA).combine_chunks()


def _dictionary_codes(
    column: pa.ChunkedArray,
) -> tuple[npt.NDArray[np.str_], npt.NDArray[np.int64]]:
    """A dictionary column's labels and each row's index into them (one chunk)."""
    chunk = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    labels = np.array(chunk.dictionary.to_pylist(), dtype=str)
    indices = chunk.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    return labels, indices


def _concat(parts: list[pa.Table]) -> pa.Table:
    if not parts:
        return STAGED_ARROW_SCHEMA.empty_table()
    return pa.concat_tables(parts)

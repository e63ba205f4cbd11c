"""Month files of a version being published, appended to group by group (publishing.py).

Rows arrive as coded rows (store.coded_rows) in practice order, a practice group at a
time; each month's rows wait until a whole row group is there, so row groups are cut at
the same sizes as the generator's, whatever the groups.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pyarrow.parquet as pq

from dpgate_server.store.appointment_files import PHYSICAL_SCHEMA, ROW_GROUP_ROWS, WRITE_OPTIONS
from dpgate_server.store.coded_rows import CodedRows, Labels


class MonthTableFiles:
    """One Parquet writer per month for coded rows (store.coded_rows), appended in order.

    For a publish that writes rows practice group by practice group: rows wait per month
    until a whole row group of ROW_GROUP_ROWS is there, so the row groups are cut at the
    same sizes whatever the batches, and at most one row group per month is held. Each row
    group's dictionaries hold the labels it uses, sorted: the bytes depend on the rows alone.
    """

    def __init__(self, paths: Sequence[Path], labels: Labels) -> None:
        self._labels = labels
        self._writers = [pq.ParquetWriter(p, PHYSICAL_SCHEMA, **WRITE_OPTIONS) for p in paths]
        self._pending: list[list[CodedRows]] = [[] for _ in paths]
        self._waiting = [0] * len(paths)

    def append(self, month: int, rows: CodedRows) -> None:
        """Add `rows` (all the appointments columns, in order) to month `month` (an index
        into the paths)."""
        if rows.num_rows == 0:
            return
        self._pending[month].append(rows)
        self._waiting[month] += rows.num_rows
        if self._waiting[month] >= ROW_GROUP_ROWS:
            self._flush(month, final=False)

    def _flush(self, month: int, *, final: bool) -> None:
        if self._waiting[month] == 0:
            return
        rows = CodedRows.concatenate(self._pending[month])
        start = 0
        while rows.num_rows - start >= ROW_GROUP_ROWS or (final and start < rows.num_rows):
            stop = min(start + ROW_GROUP_ROWS, rows.num_rows)
            group = rows.slice(start, stop).to_arrow(self._labels, PHYSICAL_SCHEMA)
            self._writers[month].write_table(group, row_group_size=stop - start)
            start = stop
        rest = rows.slice(start, rows.num_rows)
        self._pending[month] = [rest] if rest.num_rows else []
        self._waiting[month] = rest.num_rows

    def close(self) -> None:
        """Write what waits and close every file (each exists, even with no rows)."""
        try:
            for month in range(len(self._writers)):
                self._flush(month, final=True)
        finally:
            for writer in self._writers:
                writer.close()

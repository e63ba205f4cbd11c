"""Checks of a new version's month files before it may go live (beyond the bound).

A version is sealed only after its files were read back and found to be what was meant:
the appointments schema in every file, each file holding its own month only and sorted by
practice, and the rows of every practice exactly as many as the writer wrote (a lost or
doubled batch would show). Every check reads the files, not the writer's memory, and keeps
memory bounded (statistics, one column at a time, small group tables). Messages name files
and public practice codes, never row counts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq

from dpgate_server.store.appointment_files import APPOINTMENTS_SCHEMA

PRACTICE = "practice_code"
MONTH = "month"


class VersionCheckError(ValueError):
    """A written file is not what the publish meant to write; the version must not go live."""


def check_schema(paths: Sequence[Path]) -> None:
    """Every file has exactly the appointments columns, in order, with their types."""
    expected = [(f.name, f.type) for f in APPOINTMENTS_SCHEMA]
    for path in paths:
        actual = [(f.name, f.type) for f in pq.read_schema(path)]
        if actual != expected:
            raise VersionCheckError(f"{path.name} does not have the appointments schema")


def check_months_and_order(files: Mapping[str, Path]) -> None:
    """File `month` holds rows of that month only, and its row groups follow practice order
    (from the row-group statistics the writer records)."""
    for month, path in files.items():
        metadata = pq.ParquetFile(path).metadata
        names = metadata.schema.to_arrow_schema().names
        month_column, practice_column = names.index(MONTH), names.index(PRACTICE)
        previous_max: str | None = None
        for group in range(metadata.num_row_groups):
            row_group = metadata.row_group(group)
            months = row_group.column(month_column).statistics
            if (
                months is None
                or not months.has_min_max
                or (months.min, months.max) != (month, month)
            ):
                raise VersionCheckError(f"{path.name} holds rows of another month")
            practices = row_group.column(practice_column).statistics
            if practices is None or not practices.has_min_max:
                raise VersionCheckError(f"{path.name} has no practice statistics")
            if previous_max is not None and practices.min < previous_max:
                raise VersionCheckError(f"{path.name} is not sorted by practice")
            previous_max = practices.max


def check_rows_per_practice(paths: Sequence[Path], written: Mapping[str, int]) -> None:
    """The files hold, per practice, exactly `written` rows (practices absent: none)."""
    if not paths:
        counted: dict[str, int] = {}
    else:
        frame = (
            pl.scan_parquet([str(p) for p in paths])
            .group_by(PRACTICE)
            .len()
            .collect(engine="streaming")
        )
        counted = {str(code): int(rows) for code, rows in frame.iter_rows()}
    expected = {code: rows for code, rows in written.items() if rows}
    if counted != expected:
        differing = sorted(
            code for code in set(counted) | set(expected) if counted.get(code) != expected.get(code)
        )
        shown = ", ".join(differing[:10])
        raise VersionCheckError(
            f"the rows of {len(differing)} practice(s) in the files are not the rows written "
            f"({shown})"
        )

"""Coded rows and the month files they are appended to: whole row groups, bytes that
depend on the rows only, rank hashes equal to the Arrow definition."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from dpgate_server.store.appointment_files import (
    APPOINTMENTS_SCHEMA,
    PHYSICAL_SCHEMA,
    ROW_GROUP_ROWS,
)
from dpgate_server.store.bounding import LabelCodes, row_rank_hashes
from dpgate_server.store.coded_rows import CodedRows, Labels
from dpgate_server.store.month_table_files import MonthTableFiles
from dpgate_server.store.store import sha256_of


def _rows(count: int) -> pa.Table:
    rng = np.random.default_rng(5)
    columns = {}
    for field in APPOINTMENTS_SCHEMA:
        if field.type == pa.string():
            labels = np.array([f"{field.name}-{i}" for i in range(7)])
            values = labels[np.sort(rng.integers(0, 7, count))]
            columns[field.name] = pa.array(values.tolist()).dictionary_encode()
        elif field.type == pa.date32():
            columns[field.name] = pa.array(rng.integers(19_000, 19_300, count), pa.int32()).view(
                pa.date32()
            )
        else:
            columns[field.name] = pa.array(rng.integers(0, 60, count)).cast(field.type)
    return pa.table(columns).cast(PHYSICAL_SCHEMA)


def _write(path: Path, table: pa.Table, batch: int, labels: Labels) -> None:
    files = MonthTableFiles([path], labels)
    for start in range(0, table.num_rows, batch):
        files.append(0, CodedRows.from_arrow(table.slice(start, batch), labels))
    files.close()


def test_row_groups_are_cut_at_fixed_sizes_whatever_the_batches(tmp_path: Path) -> None:
    table = _rows(ROW_GROUP_ROWS + 1000)
    _write(tmp_path / "one.parquet", table, table.num_rows, Labels())
    _write(tmp_path / "many.parquet", table, 7_777, Labels())
    metadata = pq.ParquetFile(tmp_path / "many.parquet").metadata
    sizes = [metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)]
    assert sizes == [ROW_GROUP_ROWS, 1000]
    assert sha256_of(tmp_path / "one.parquet") == sha256_of(tmp_path / "many.parquet")
    back = pq.read_table(tmp_path / "many.parquet")
    assert back.schema.equals(APPOINTMENTS_SCHEMA)
    assert back.equals(table.cast(APPOINTMENTS_SCHEMA))


def test_a_month_without_rows_is_an_empty_file_with_the_schema(tmp_path: Path) -> None:
    MonthTableFiles([tmp_path / "empty.parquet"], Labels()).close()
    assert pq.read_table(tmp_path / "empty.parquet").schema.equals(APPOINTMENTS_SCHEMA)


def test_coded_rank_hashes_are_the_arrow_ones() -> None:
    table = _rows(5_000)
    nullable = table.column("duration_minutes").combine_chunks()
    with_nulls = pa.array(nullable.to_pylist()[:-7] + [None] * 7, pa.int64())
    table = table.set_column(11, "duration_minutes", with_nulls)
    labels = Labels()
    coded = CodedRows.from_arrow(table.slice(0, 2_000), labels)
    coded = CodedRows.concatenate([coded, CodedRows.from_arrow(table.slice(2_000), labels)])
    expected = row_rank_hashes(table, LabelCodes(99))
    assert np.array_equal(coded.rank_values(table.column_names, labels, LabelCodes(99)), expected)

"""A release's cells as one Arrow IPC table: what the ledger stores and the wire carries.

The table has the group-by columns (in the release's group-by order), then `value`
(Int64, the unbiased noisy value), `ci_low` and `ci_high` (Float64, the interval at the
release's confidence level), one row per cell, sorted by the keys. It is exactly the frame
a client shows (`QueryResult.frame`), so a stored release goes out as the bytes it was
stored as, and the client reads it with one `pl.read_ipc`: no Python loop over cells
anywhere between the worker and the planner's notebook.

Key columns have the dtypes a client has always seen (String for labels, Int64 for
integers, Date for dates), whatever the engine's frame used internally (Categorical,
Enum, Int32, ...). Intervals are whole numbers written as Float64, exact below 2**53.

The bytes are written by Polars' own IPC writer with LZ4 buffers: a 70k-cell table is
about a third of its uncompressed size and decodes in a few milliseconds (zstd is smaller
but several times slower to decode).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Final

import polars as pl

from dpgate_server.queries.errors import EngineError, ReleaseFormatError

VALUE: Final = "value"
CI_LOW: Final = "ci_low"
CI_HIGH: Final = "ci_high"
MEASURE_COLUMNS: Final = (VALUE, CI_LOW, CI_HIGH)
SUMMED_CELLS: Final = "cells"
"""A derived answer's last column: how many released cells were added into each row."""
_COMPRESSION: Final = "lz4"


def build(
    frame: pl.DataFrame, group_by: Sequence[str], value_column: str, half_width: int
) -> pl.DataFrame:
    """The cell table of an engine result: keys normalised, sorted, intervals added.

    Raises EngineError if a cell has no value (OpenDP returned a null).
    """
    keys = list(group_by)
    if keys:
        frame = frame.sort(keys, nulls_last=False)
    if frame.get_column(value_column).null_count():
        raise EngineError("OpenDP returned a cell without a value")
    value = pl.col(value_column).cast(pl.Int64)
    return frame.select(
        *(_wire_key(name, frame.schema[name]) for name in keys),
        value.alias(VALUE),
        *_intervals(value, half_width),
    )


def wire_keys(frame: pl.DataFrame, group_by: Sequence[str]) -> pl.DataFrame:
    """The key columns of `frame` with the dtypes a release carries, sorted as released."""
    keys = list(group_by)
    frame = frame.sort(keys, nulls_last=False)
    return frame.select(*(_wire_key(name, frame.schema[name]) for name in keys))


def from_rows(
    group_by: Sequence[str],
    keys: Sequence[Sequence[object]],
    values: Sequence[int],
    lows: Sequence[float],
    highs: Sequence[float],
) -> pl.DataFrame:
    """The table of cells given one by one (releases stored before the columnar format).

    Built the way clients built their frame from per-cell messages, so an old release
    reads back as exactly the frame it was shown as.
    """
    columns: dict[str, list[object]] = {
        name: [row[i] for row in keys] for i, name in enumerate(group_by)
    }
    return pl.DataFrame(
        {**columns, VALUE: list(values), CI_LOW: list(lows), CI_HIGH: list(highs)},
        schema_overrides={VALUE: pl.Int64, CI_LOW: pl.Float64, CI_HIGH: pl.Float64},
    )


def with_half_width(table: pl.DataFrame, half_width: int) -> pl.DataFrame:
    """The same cells with intervals of another half-width (another confidence level)."""
    value = pl.col(VALUE)
    return table.with_columns(*_intervals(value, half_width))


def encode(table: pl.DataFrame) -> bytes:
    """Arrow IPC (file format) bytes of `table`."""
    sink = io.BytesIO()
    table.write_ipc(sink, compression=_COMPRESSION)
    return sink.getvalue()


def decode(data: bytes) -> pl.DataFrame:
    """The table `encode` wrote; raises ReleaseFormatError for bytes that are not one.

    A derived answer's table ends with `cells` after the measures.
    """
    try:
        table = pl.read_ipc(io.BytesIO(data), memory_map=False)
    except Exception as exc:  # Polars raises several types for a corrupt file
        raise ReleaseFormatError(f"release cells do not parse as Arrow IPC: {exc}") from exc
    measures = table.columns[-4:-1] if table.columns[-1:] == [SUMMED_CELLS] else table.columns[-3:]
    if tuple(measures) != MEASURE_COLUMNS:
        raise ReleaseFormatError(f"release cells have columns {table.columns}")
    return table


def _intervals(value: pl.Expr, half_width: int) -> tuple[pl.Expr, pl.Expr]:
    return (
        (value - half_width).cast(pl.Float64).alias(CI_LOW),
        (value + half_width).cast(pl.Float64).alias(CI_HIGH),
    )


def _wire_key(name: str, dtype: pl.DataType) -> pl.Expr:
    column = pl.col(name)
    if dtype in (pl.String, pl.Categorical) or isinstance(dtype, pl.Enum | pl.Categorical):
        return column.cast(pl.String)
    if dtype.is_integer():
        return column.cast(pl.Int64)
    if dtype == pl.Date:
        return column
    raise EngineError(f"group-by column {name} has dtype {dtype}, not a label, integer or date")

"""The stored appointments table: its schema and the fixed Parquet settings it is written with.

The files follow the appointments schema that the engine relies on (String, Date, Int32,
Int64 columns). Writers hand categorical columns to Parquet as dictionary arrays
(`PHYSICAL_SCHEMA`), which is fast and compact, but without the Arrow schema blob so
readers see plain strings. Settings are fixed and no timestamp is written, so the same
rows always give the same bytes, whether the synthetic generator or publishing wrote them.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

APPOINTMENTS_SCHEMA = pa.schema(
    [
        ("patient_key", pa.int64()),
        ("practice_code", pa.string()),
        ("pcn_code", pa.string()),
        ("sub_icb_code", pa.string()),
        ("icb_code", pa.string()),
        ("region_code", pa.string()),
        ("appointment_date", pa.date32()),
        ("week", pa.string()),
        ("month", pa.string()),
        ("weekday", pa.string()),
        ("hour", pa.int32()),
        ("duration_minutes", pa.int64()),
        ("duration_band", pa.string()),
        ("lead_time_days", pa.int64()),
        ("lead_time_band", pa.string()),
        ("mode", pa.string()),
        ("status", pa.string()),
        ("hcp_type", pa.string()),
        ("national_category", pa.string()),
        ("service_setting", pa.string()),
        ("age_band", pa.string()),
        ("sex", pa.string()),
    ]
)
"""Column order and logical types of the private `appointments` table."""

PHYSICAL_SCHEMA = pa.schema(
    [
        pa.field(f.name, pa.dictionary(pa.int32(), pa.string())) if f.type == pa.string() else f
        for f in APPOINTMENTS_SCHEMA
    ]
)
"""What the writers receive: strings as dictionaries (stored as plain Parquet strings)."""

WRITE_OPTIONS = {
    "compression": "zstd",
    "compression_level": 1,
    "use_dictionary": True,
    # Statistics only where readers prune row groups (practice and date filters): string
    # statistics on every column would double the write time.
    "write_statistics": [
        "practice_code",
        "pcn_code",
        "sub_icb_code",
        "icb_code",
        "region_code",
        "appointment_date",
        "month",
    ],
    "store_schema": False,
    "version": "2.6",
}
ROW_GROUP_ROWS = 1 << 18
"""Rows per Parquet row group. Groups are cut at fixed sizes, so the bytes of a file depend
on its rows only, never on how the generator chunked its work."""


def write_table(table: pa.Table, path: Path) -> None:
    """Write a small table (a public table) with the same fixed settings."""
    pq.write_table(table, path, row_group_size=ROW_GROUP_ROWS, **WRITE_OPTIONS)

"""Test datasets derived from the session's small synthetic dataset."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from dpgate_server.store.bounding import verify_bound
from dpgate_server.store.store import DatasetStore, DatasetVersion

PATIENT_KEY = "patient_key"
_COPY_BITS = 56
"""Copy c's patient keys are the source's with bits 56-62 XORed with c: new patients."""


def publish_copies(source: DatasetVersion, store_root: Path, copies: int) -> DatasetVersion:
    """Publish `copies` copies of `source`'s rows into `store_root`, each copy with its own
    patients, with a verified bound: `copies` times the rows, the same public keys.

    For tests that need more rows than the generator makes quickly (~1.5 s per million rows
    here, against ~7 s per million for the generator). Every patient keeps their rows, so
    the version's bound is the source's (checked again by `verify_bound`).
    """
    if not 1 <= copies < 2 ** (63 - _COPY_BITS):
        raise ValueError(f"copies must be between 1 and {2 ** (63 - _COPY_BITS) - 1}")
    store = DatasetStore(store_root)
    builder = store.begin_version(source.metadata)
    for path in source.appointment_paths():
        frame = pl.read_parquet(path)
        pl.concat(
            [
                frame.with_columns(pl.col(PATIENT_KEY).xor(pl.lit(c << _COPY_BITS)))
                for c in range(copies)
            ]
        ).write_parquet(builder.appointments_path(path.stem))
    for record in source.manifest.public_files:
        name = Path(record.path).stem
        pl.read_parquet(source.path / record.path).write_parquet(builder.public_table_path(name))
    assert source.manifest.bound is not None
    paths = sorted((builder.staging / "appointments").glob("*.parquet"))
    bound = verify_bound(paths, source.manifest.bound.max_contributions)
    return store.publish(builder, bound, {"copies_of": source.version, "copies": copies})

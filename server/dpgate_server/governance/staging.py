"""Staged practices: each practice's minimised rows from its last accepted extract.

One Parquet file per practice (`staged/<practice_code>.parquet`, columns
ingest.STAGED_COLUMNS), with the upload's record in the file's key-value metadata, so
the rows and what is said about them are replaced together by one atomic rename. A new
extract replaces the practice's previous rows whole; a withdrawal deletes them. Only
minimised rows are ever written here: no NHS number, date of birth or postcode.
Callers hold the dataset's governance lock for every change.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import polars as pl

from dpgate_server.durable import remove_durably, remove_temporaries, replace_with
from dpgate_server.governance.ingest import STAGED_COLUMNS

STAGED_DIR = "staged"
_RECORD_KEY = "dpgate.upload"


@dataclass(frozen=True, slots=True)
class UploadRecord:
    """What was staged for a practice, and when.

    Attributes:
        practice_code: the practice.
        uploaded_at: when the extract was staged (RFC 3339, UTC).
        uploaded_by: requester id of the provider ("operator" for the command line).
        rows_staged: rows kept (after opt-outs).
        rows_opted_out: rows left out because their patient opted out.
        key_id: fingerprint of the pseudonymisation key the rows were keyed with.
        extract_sha256: digest of the raw extract as received (lets a supplier prove
            which file was ingested; the file itself is not kept).
    """

    practice_code: str
    uploaded_at: str
    uploaded_by: str
    rows_staged: int
    rows_opted_out: int
    key_id: str
    extract_sha256: str


class StagingArea:
    """The staged practices of one dataset."""

    def __init__(self, dataset_folder: Path) -> None:
        self.folder = dataset_folder / STAGED_DIR

    def practices(self) -> list[str]:
        """Codes of the practices with staged rows, sorted."""
        if not self.folder.is_dir():
            return []
        return sorted(p.stem for p in self.folder.glob("*.parquet") if not p.name.startswith("."))

    def path(self, practice_code: str) -> Path:
        return self.folder / f"{practice_code}.parquet"

    def record(self, practice_code: str) -> UploadRecord | None:
        """The practice's upload record, or None if nothing is staged for it."""
        try:
            metadata = pl.read_parquet_metadata(self.path(practice_code))
        except FileNotFoundError:
            return None
        return UploadRecord(**json.loads(metadata[_RECORD_KEY]))

    def scan(self, practice_code: str) -> pl.LazyFrame:
        return pl.scan_parquet(self.path(practice_code))

    def stage(
        self,
        rows: pl.DataFrame,
        record: UploadRecord,
        before_swap: Callable[[], None] | None = None,
    ) -> None:
        """Replace the practice's staged rows with `rows`, atomically.

        `before_swap` runs when the new rows are durable but not yet in place (the caller
        audits there, so an upload that cannot be audited changes nothing).
        """
        staged = rows.select(list(STAGED_COLUMNS))
        metadata = {_RECORD_KEY: json.dumps(asdict(record))}

        def write(path: Path) -> None:
            # Polars' writer, not pyarrow's: it encodes the columns in parallel, without a
            # copy to Arrow first (the write was half of an ingest).
            staged.write_parquet(path, compression="zstd", metadata=metadata)

        replace_with(self.path(record.practice_code), write, before_swap)

    def remove(self, practice_code: str) -> bool:
        """Delete the practice's staged rows; True if there were any."""
        return remove_durably(self.path(practice_code))

    def purge(self, opted_out: pl.DataFrame) -> int:
        """Remove the rows of opted-out patients (`opted_out`: column patient_key) from
        every staged practice; returns how many rows were removed."""
        removed = 0
        for code in self.practices():
            record = self.record(code)
            if record is None:
                continue
            rows = pl.read_parquet(self.path(code))
            kept = rows.join(opted_out, on="patient_key", how="anti", maintain_order="left")
            if kept.height == rows.height:
                continue
            dropped = rows.height - kept.height
            removed += dropped
            self.stage(
                kept,
                replace(
                    record,
                    rows_staged=kept.height,
                    rows_opted_out=record.rows_opted_out + dropped,
                ),
            )
        return removed

    def clean(self) -> int:
        """Remove temporary files a killed writer left behind (hold the lock)."""
        return remove_temporaries(self.folder)

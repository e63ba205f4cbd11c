"""Opt-out lists, kept only as keyed hashes: the list files are consumed, never kept.

Two lists apply to every dataset: the national data opt-out and type-1 opt-outs (a
patient's objection to their GP data leaving the practice). A list arrives as a file of
NHS numbers (CSV, header `nhs_number`); loading it turns every number into its
`patient_key` (the same keyed HMAC ingest uses, so a list entry matches the rows it must
remove), stores the keys durably, and only then deletes the file. A new list replaces the
previous list of its kind: a patient missing from the new list has opted back in, and
returns with their practice's next upload.

Layout under the governance folder::

    optouts/national.parquet   patient_key Int64, sorted, distinct
    optouts/type1.parquet
    optouts/LOCK               serialises loads (flock)
"""

from __future__ import annotations

import contextlib
import io
from enum import StrEnum
from pathlib import Path

import polars as pl

from dpgate_server.durable import exclusive_lock, remove_temporaries, replace_with
from dpgate_server.governance import extract_format as fmt
from dpgate_server.governance.errors import GovernanceError
from dpgate_server.store.pseudonym import patient_keys
from dpgate_server.vocabulary.errors import ErrorReason
from dpgate_server.vocabulary.nhs_number import is_valid_nhs_number

OPT_OUT_DIR = "optouts"
KEY_COLUMN = "patient_key"
_MAX_REPORTED_LINES = 20


class OptOutKind(StrEnum):
    """Which list."""

    NATIONAL = "national"
    """The national data opt-out."""
    TYPE1 = "type1"
    """Type-1 opt-outs recorded at practices."""


class OptOutLists:
    """The stored keyed-hash lists under one governance folder."""

    def __init__(self, governance_root: Path) -> None:
        self._folder = governance_root / OPT_OUT_DIR
        self._sorted: tuple[tuple[tuple[int, int, int], ...], pl.Series] | None = None

    def keys(self) -> pl.DataFrame:
        """Every opted-out `patient_key` of every list (one column, distinct)."""
        files = [self._path(kind) for kind in OptOutKind if self._path(kind).is_file()]
        if not files:
            return pl.DataFrame(schema={KEY_COLUMN: pl.Int64})
        return pl.read_parquet(files).unique()

    def remove_opted_out(self, rows: pl.DataFrame) -> pl.DataFrame:
        """`rows` (with column patient_key) without the opted-out patients' rows, in order.

        Each row's key is looked up by binary search in the lists' keys, sorted and held
        in memory until a list file changes: a national list holds millions of keys, too
        many to read and hash again for every upload.
        """
        keys = self._sorted_keys()
        if keys.is_empty():
            return rows
        key = pl.col(KEY_COLUMN)
        nearest = pl.lit(keys).gather(pl.lit(keys).search_sorted(key).clip(0, keys.len() - 1))
        return rows.filter((nearest != key).fill_null(True))

    def _sorted_keys(self) -> pl.Series:
        files = [self._path(kind) for kind in OptOutKind if self._path(kind).is_file()]
        stamp = tuple((s.st_ino, s.st_mtime_ns, s.st_size) for s in (f.stat() for f in files))
        if self._sorted is None or self._sorted[0] != stamp:
            self._sorted = (stamp, self.keys().get_column(KEY_COLUMN).sort())
        return self._sorted[1]

    def count(self, kind: OptOutKind) -> int:
        """How many keys the stored list of `kind` holds (0 if none was loaded)."""
        path = self._path(kind)
        return pl.scan_parquet(path).select(pl.len()).collect().item() if path.is_file() else 0

    def consume(self, kind: OptOutKind, path: Path, key: bytes) -> int:
        """Replace the list of `kind` with the numbers in `path`, then delete `path`.

        The keys are written and fsynced before the file is deleted, so a crash leaves
        either the file (loaded again next time) or the keys, never neither. A file with
        an invalid number is refused whole and left where it is.

        Returns:
            How many distinct patients the new list holds.

        Raises:
            GovernanceError: OPT_OUT_LIST_REJECTED (not a list of valid NHS numbers).
        """
        numbers = read_opt_out_numbers(path)
        keys = (
            pl.DataFrame({KEY_COLUMN: patient_keys(key, numbers)}, schema={KEY_COLUMN: pl.Int64})
            .unique()
            .sort(KEY_COLUMN)
        )
        self._folder.mkdir(parents=True, exist_ok=True)
        with self._locked():
            remove_temporaries(self._folder)
            replace_with(self._path(kind), keys.write_parquet)
        path.unlink()
        return keys.height

    def _path(self, kind: OptOutKind) -> Path:
        return self._folder / f"{kind.value}.parquet"

    def _locked(self) -> contextlib.AbstractContextManager[None]:
        return exclusive_lock(self._folder / "LOCK")


def read_opt_out_numbers(path: Path) -> list[str]:
    """The NHS numbers of a list file, validated (check digits), spaces removed.

    Raises:
        GovernanceError: OPT_OUT_LIST_REJECTED naming the first bad lines (never their
            numbers) and how many there are.
    """
    data = path.read_bytes()
    try:
        frame = pl.read_csv(io.BytesIO(data), infer_schema=False)
    except pl.exceptions.PolarsError:
        raise _rejected(f"{path.name} is not a CSV file") from None
    if frame.columns != [fmt.OPT_OUT_COLUMN]:
        raise _rejected(f"{path.name} must have exactly one column, {fmt.OPT_OUT_COLUMN!r}")
    numbers = [
        ("" if n is None else n.replace(" ", "")) for n in frame.get_column(fmt.OPT_OUT_COLUMN)
    ]
    bad = [line for line, n in enumerate(numbers, start=2) if not is_valid_nhs_number(n)]
    if bad:
        shown = ", ".join(str(b) for b in bad[:_MAX_REPORTED_LINES])
        raise _rejected(
            f"{path.name}: {len(bad)} line(s) are not valid NHS numbers (lines {shown}); "
            "the list was not loaded"
        )
    return numbers


def _rejected(message: str) -> GovernanceError:
    return GovernanceError(ErrorReason.OPT_OUT_LIST_REJECTED, message)

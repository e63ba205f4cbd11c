"""Patient buckets: every row's (patient key, rank prefix), filed by a hash of the patient.

All of one patient's rows land in the same bucket whichever practices they came from, so
the cut of a patient split across two practices is decided with all their rows in view,
one bucket at a time. The files hold raw little-endian pairs, 12 bytes a row (the rank's
high 32 bits: bounding.rank_prefix): appended as rows are read, read back whole, deleted
once their bucket is cut. At national scale they are the publish's largest scratch files.

A dataset with per-period bounds files more per row (`with_periods`): the full 64-bit rank
and the codes of the row's practice, week and month (32 bytes a row), since its cut depends
on which period and practice each row falls in (store.period_bounding).
"""

from __future__ import annotations

from pathlib import Path
from types import TracebackType
from typing import BinaryIO

import numpy as np
import numpy.typing as npt

from dpgate_server.store.bounding import rank_prefix, splitmix64

_PAIR = np.dtype([("patient_key", "<i8"), ("prefix", "<u4")])
_PERIOD_ROW = np.dtype(
    [
        ("patient_key", "<i8"),
        ("rank", "<u8"),
        ("practice_code", "<i4"),
        ("week", "<i4"),
        ("month", "<i4"),
    ]
)
PERIOD_FIELDS: tuple[str, ...] = ("practice_code", "week", "month")
"""The codes filed beside each row's rank for a cut with per-period bounds."""
_BUCKET_SALT = np.uint64(0x5851_F42D_4C95_7F2D)


def bucket_of(patient: npt.NDArray[np.int64], buckets: int) -> npt.NDArray[np.int64]:
    """Each patient key's bucket (`buckets` a power of two); depends on the key alone."""
    with np.errstate(over="ignore"):
        mixed = splitmix64(patient.view(np.uint64) ^ _BUCKET_SALT)
    return (mixed & np.uint64(buckets - 1)).astype(np.int64)


class BucketFiles:
    """One append-only file per bucket under `folder`."""

    def __init__(self, folder: Path, buckets: int, *, with_periods: bool = False) -> None:
        if buckets < 1 or buckets & (buckets - 1):
            raise ValueError("the bucket count must be a power of two")
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.buckets = buckets
        self.with_periods = with_periods
        self._handles: list[BinaryIO] | None = None

    def path(self, bucket: int) -> Path:
        return self.folder / f"{bucket:05d}.pairs"

    def open(self) -> BucketFiles:
        self._handles = [self.path(b).open("ab", buffering=1 << 20) for b in range(self.buckets)]
        return self

    def append(
        self,
        patient: npt.NDArray[np.int64],
        rank: npt.NDArray[np.uint64],
        periods: dict[str, npt.NDArray[np.int32]] | None = None,
    ) -> None:
        """File each (patient, rank prefix) pair under its patient's bucket; with periods,
        (patient, rank, practice, week, month codes) rows (`periods` holds the codes)."""
        if self._handles is None:
            raise RuntimeError("open the bucket files first")
        if self.with_periods:
            if periods is None:
                raise ValueError("period bucket files need each row's period codes")
            pairs = np.empty(patient.size, dtype=_PERIOD_ROW)
            pairs["rank"] = rank
            for name in PERIOD_FIELDS:
                pairs[name] = periods[name]
        else:
            pairs = np.empty(patient.size, dtype=_PAIR)
            pairs["prefix"] = rank_prefix(rank)
        pairs["patient_key"] = patient
        if self.buckets == 1:
            self._handles[0].write(pairs.tobytes())
            return
        bucket = bucket_of(patient, self.buckets)
        order = np.argsort(bucket, kind="stable")
        bounds = np.searchsorted(bucket[order], np.arange(self.buckets + 1))
        for b in np.flatnonzero(np.diff(bounds)):
            # file.write, not ndarray.tofile: a full disk then raises OSError(ENOSPC)
            self._handles[b].write(pairs[order[bounds[b] : bounds[b + 1]]].tobytes())

    def close(self) -> None:
        handles, self._handles = self._handles, None
        for handle in handles or []:
            handle.close()

    def read(self, bucket: int) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.uint32]]:
        """Every pair filed under `bucket` (patient keys, rank prefixes)."""
        path = self.path(bucket)
        pairs = np.fromfile(path, dtype=_PAIR) if path.exists() else np.empty(0, dtype=_PAIR)
        return (
            np.ascontiguousarray(pairs["patient_key"]),
            np.ascontiguousarray(pairs["prefix"]),
        )

    def read_rows(self, bucket: int) -> npt.NDArray[np.void]:
        """Every row filed under `bucket` of period bucket files (a structured array with
        patient_key, rank, practice_code, week and month)."""
        if not self.with_periods:
            raise ValueError("these bucket files hold pairs; use read")
        path = self.path(bucket)
        if not path.exists():
            return np.empty(0, dtype=_PERIOD_ROW)
        return np.fromfile(path, dtype=_PERIOD_ROW)

    def remove(self, bucket: int) -> None:
        self.path(bucket).unlink(missing_ok=True)

    def __enter__(self) -> BucketFiles:
        return self.open()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()

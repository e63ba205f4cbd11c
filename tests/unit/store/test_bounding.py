"""Publish-time contribution bound: cut to k rows per patient, then verify over all files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from dpgate_server.store import bounding
from dpgate_server.store.bounding import (
    BOUND_METHOD,
    BoundViolationError,
    bound_lazyframe,
    max_rows_per_patient,
    truncation_mask,
    verify_bound,
)


def _write(path: Path, keys: list[int]) -> Path:
    pl.DataFrame({"patient_key": keys}, schema={"patient_key": pl.Int64}).write_parquet(path)
    return path


def test_truncation_keeps_at_most_k_rows_per_patient() -> None:
    rng = np.random.default_rng(1)
    patient = np.repeat(np.arange(1_000), rng.integers(0, 60, 1_000))
    kept = patient[truncation_mask(patient, 24, rng)]
    counts = np.bincount(kept, minlength=1_000)
    assert counts.max() == 24
    assert np.array_equal(counts, np.minimum(np.bincount(patient, minlength=1_000), 24))


def test_truncation_picks_rows_at_random() -> None:
    rng = np.random.default_rng(2)
    patient = np.zeros(100, dtype=np.int64)
    kept_positions = np.concatenate(
        [np.flatnonzero(truncation_mask(patient, 10, rng)) for _ in range(400)]
    )
    # Uniform choice: each of 100 rows kept 40 times on average (sd ~5.7); never all first rows.
    counts = np.bincount(kept_positions, minlength=100)
    assert counts.min() > 10
    assert counts.max() < 80


def test_bound_verifies_when_every_patient_is_within_k(tmp_path: Path) -> None:
    first = _write(tmp_path / "a.parquet", [1] * 24 + [2] * 3)
    second = _write(tmp_path / "b.parquet", [3] * 24)
    bound = verify_bound([first, second], 24)
    assert bound.verified
    assert bound.max_contributions == 24
    assert bound.method == BOUND_METHOD


def test_one_patient_over_k_fails_verification(tmp_path: Path) -> None:
    fine = _write(tmp_path / "a.parquet", [1] * 24)
    over = _write(tmp_path / "b.parquet", [2] * 25)
    with pytest.raises(BoundViolationError, match="25 rows"):
        verify_bound([fine, over], 24)


def test_patient_split_across_files_is_counted_whole(tmp_path: Path) -> None:
    first = _write(tmp_path / "a.parquet", [7] * 20)
    second = _write(tmp_path / "b.parquet", [7] * 5)
    with pytest.raises(BoundViolationError):
        verify_bound([first, second], 24)


def test_counting_in_passes_gives_the_same_maximum(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = np.random.default_rng(3)
    keys = rng.integers(-(2**62), 2**62, 500).tolist()
    rows = [k for i, k in enumerate(keys) for _ in range(1 + i % 30)]
    path = _write(tmp_path / "a.parquet", rows)
    single = max_rows_per_patient([path])
    monkeypatch.setattr(bounding, "_ROWS_PER_VERIFY_PASS", 500)
    assert max_rows_per_patient([path]) == single == 30


def test_bound_lazyframe_cuts_every_patient_to_k() -> None:
    frame = pl.LazyFrame({"patient_key": [1] * 50 + [2] * 10 + [3] * 24, "x": range(84)})
    counts = bound_lazyframe(frame, 24, seed=5).group_by("patient_key").len().collect()
    assert dict(counts.iter_rows()) == {1: 24, 2: 10, 3: 24}

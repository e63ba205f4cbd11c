"""Publish-time contribution bound: cut to k rows per patient, then verify over all files."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pytest

from dpgate_server.store.bounding import (
    BOUND_METHOD,
    KEYED_HASH_BOUND_METHOD,
    NULL_VALUE,
    BoundViolationError,
    LabelCodes,
    cut_points,
    keep_mask,
    label_hash,
    max_rows_per_patient,
    rank_prefix,
    row_rank_hashes,
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


def test_counting_in_passes_gives_the_same_maximum(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    keys = rng.integers(-(2**62), 2**62, 500).tolist()
    rows = [k for i, k in enumerate(keys) for _ in range(1 + i % 30)]
    path = _write(tmp_path / "a.parquet", rows)
    assert max_rows_per_patient([path]) == max_rows_per_patient([path], rows_per_pass=500) == 30


def test_verified_keyed_bound_records_its_method_and_seed(tmp_path: Path) -> None:
    path = _write(tmp_path / "a.parquet", [1] * 3)
    bound = verify_bound([path], 24, method=KEYED_HASH_BOUND_METHOD, seed=77)
    assert (bound.method, bound.seed, bound.verified) == (KEYED_HASH_BOUND_METHOD, 77, True)


# keyed-hash ranks

MASK = 2**64 - 1


def _splitmix64(z: int) -> int:
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9 & MASK
    z = (z ^ (z >> 27)) * 0x94D049BB133111EB & MASK
    return z ^ (z >> 31)


def _reference_rank(row: dict[str, object], seed: int) -> int:
    """The definition in row_rank_hashes' docstring, one row at a time."""
    h = _splitmix64(seed & MASK)
    for value in row.values():
        if value is None:
            v = NULL_VALUE
        elif isinstance(value, str):
            v = label_hash(value, seed)
        elif isinstance(value, dt.date):
            v = (value - dt.date(1970, 1, 1)).days & MASK
        else:
            v = int(value) & MASK  # type: ignore[call-overload]
        h = (h ^ v) * 0x9E3779B97F4A7C15 & MASK
        h ^= h >> 32
    return _splitmix64(h)


def _sample_table() -> pa.Table:
    return pa.table(
        {
            "patient_key": pa.array([5, -3, 2**62, 5], pa.int64()),
            "appointment_date": pa.array(
                [dt.date(2025, 1, 2), dt.date(1969, 12, 31), None, dt.date(2025, 1, 2)]
            ),
            "mode": pa.array(["Telephone", "Face-to-Face", None, "Telephone"]).dictionary_encode(),
            "hour": pa.array([9, 23, 0, 9], pa.int32()),
            "duration_minutes": pa.array([10, None, 60, 10], pa.int64()),
            "practice_code": pa.array(["A81001", "B1", "A81001", "A81001"], pa.string()),
        }
    )


def test_rank_hash_follows_its_definition() -> None:
    table = _sample_table()
    hashes = row_rank_hashes(table, LabelCodes(1234))
    expected = [_reference_rank(row, 1234) for row in table.to_pylist()]
    assert hashes.tolist() == expected


def test_identical_rows_hash_alike_and_the_seed_changes_every_hash() -> None:
    table = _sample_table()
    first = row_rank_hashes(table, LabelCodes(1))
    other = row_rank_hashes(table, LabelCodes(2))
    assert first[0] == first[3]
    assert len(set(first[:3].tolist())) == 3
    assert not set(first.tolist()) & set(other.tolist())


def _kept_by_sorting(patient: np.ndarray, rank: np.ndarray, k: int) -> list[tuple[int, int]]:
    frame = pl.DataFrame({"p": patient, "r": rank}).sort("p", "r")
    kept = frame.filter(pl.int_range(pl.len()).over("p") < k)
    return sorted(kept.iter_rows())


def test_cut_keeps_each_patients_k_rows_of_lowest_hash() -> None:
    rng = np.random.default_rng(4)
    patient = np.repeat(np.arange(300, dtype=np.int64), rng.integers(1, 40, 300))
    rank = rng.integers(0, 2**63, patient.size, dtype=np.uint64)
    # rows whose prefixes tie (the cut is first decided on prefixes), low bits differing
    high = rank[0] & np.uint64(0xFFFF_FFFF_0000_0000)
    rank[::5] = high | rng.integers(0, 2**32, rank[::5].size, dtype=np.uint64)
    rank[::7] = rank[0]  # identical hashes, as identical rows have
    cut = cut_points(patient, rank_prefix(rank), 12).frame
    keep = keep_mask(patient, rank, cut)
    assert sorted(zip(patient[keep].tolist(), rank[keep].tolist(), strict=True)) == (
        _kept_by_sorting(patient, rank, 12)
    )
    assert cut.height == int((np.bincount(patient) > 12).sum())


def test_identical_rows_at_the_cut_are_kept_as_often_as_the_bound_allows() -> None:
    patient = np.zeros(10, dtype=np.int64)
    rank = np.array([1, 2, 5, 5, 5, 5, 9, 9, 9, 0], dtype=np.uint64) << np.uint64(40)
    keep = keep_mask(patient, rank, cut_points(patient, rank_prefix(rank), 5).frame)
    assert sorted((rank[keep] >> np.uint64(40)).tolist()) == [0, 1, 2, 5, 5]

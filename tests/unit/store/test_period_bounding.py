"""Per-period bounds: the cut keeps every bound, chooses rows by priority from the patient's
own rows, and verification refuses files that break any bound."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from dpgate_server.store.bounding import (
    KEYED_HASH_PERIOD_BOUND_METHOD,
    BoundViolationError,
    verify_bound,
)
from dpgate_server.store.period_bounding import (
    PRIORITY,
    bound_maxima,
    cut_steps,
    period_cut,
    period_keep_mask,
    violations,
)
from dpgate_server.store.period_bounds import PeriodBounds, PeriodCap
from dpgate_server.store.publish_records import BoundKind
from dpgate_server.store.store import ContributionBound, VersionManifest
from tests.support.dropped_patients import true_patients_cut

K = 6
BOUNDS = PeriodBounds(
    (
        PeriodCap("week", rows=2, periods=3, practice_periods=3),
        PeriodCap("month", rows=4, periods=2, practice_periods=2),
    )
)


def _rows(patient: int, cells: list[tuple[str, str, str]], priorities: list[int]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "patient_key": [patient] * len(cells),
            "practice_code": [c[0] for c in cells],
            "week": [c[1] for c in cells],
            "month": [c[2] for c in cells],
            PRIORITY: np.array(priorities, dtype=np.uint64),
        }
    )


def _random_rows(seed: int, patients: int = 300) -> pl.DataFrame:
    """Heavy patients at one or two practices over 10 weeks in 3 months: every bound bites."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(1, 40, patients)
    patient = np.repeat(np.arange(patients, dtype=np.int64), counts)
    week = rng.integers(1, 11, patient.size)
    return pl.DataFrame(
        {
            "patient_key": patient,
            "practice_code": np.where(rng.random(patient.size) < 0.3, "B", "A"),
            "week": [f"2025-W{w:02d}" for w in week],
            "month": [f"2025-{1 + (w - 1) // 4:02d}" for w in week],
            PRIORITY: rng.integers(0, 2**63, patient.size).astype(np.uint64),
        }
    )


def _maxima(frame: pl.DataFrame) -> dict[str, int]:
    out = {"rows": int(frame.group_by("patient_key").len()["len"].max() or 0)}
    for period in ("week", "month"):
        cells = frame.group_by("patient_key", period).len()
        out[f"{period}.rows"] = int(cells["len"].max() or 0)
        out[f"{period}.periods"] = int(cells.group_by("patient_key").len()["len"].max() or 0)
        pairs = frame.group_by("patient_key", "practice_code", period).len()
        out[f"{period}.practice_periods"] = int(
            pairs.group_by("patient_key").len()["len"].max() or 0
        )
    return out


def test_the_cut_keeps_every_bound_on_data_that_breaks_each_of_them() -> None:
    rows = _random_rows(1)
    before = _maxima(rows)
    expected = {"rows": K}
    for cap in BOUNDS.caps:
        expected |= {
            f"{cap.period}.rows": cap.rows or 0,
            f"{cap.period}.periods": cap.periods or 0,
            f"{cap.period}.practice_periods": cap.practice_periods or 0,
        }
    assert all(before[name] > limit for name, limit in expected.items()), before
    after = _maxima(rows.filter(pl.Series(period_keep_mask(rows, K, BOUNDS))))
    assert all(after[name] <= limit for name, limit in expected.items()), after


def test_a_patient_within_every_bound_keeps_every_row() -> None:
    rows = _rows(7, [("A", "2025-W01", "2025-01"), ("A", "2025-W05", "2025-02")], [5, 9])
    assert period_keep_mask(rows, K, BOUNDS).all()


def test_rows_in_a_week_are_kept_by_lowest_priority() -> None:
    cells = [("A", "2025-W01", "2025-01")] * 4
    rows = _rows(1, cells, [40, 10, 30, 20])
    keep = period_keep_mask(rows, K, BOUNDS)
    assert rows.filter(pl.Series(keep))[PRIORITY].sort().to_list() == [10, 20]


def test_the_weeks_kept_are_those_whose_best_row_ranks_first() -> None:
    weeks = ["2025-W01", "2025-W02", "2025-W03", "2025-W04"]
    cells = [("A", w, "2025-01") for w in weeks]
    rows = _rows(1, cells, [400, 100, 300, 200])
    kept = rows.filter(pl.Series(period_keep_mask(rows, K, BOUNDS)))
    assert sorted(kept["week"].to_list()) == ["2025-W02", "2025-W03", "2025-W04"]


def test_practice_week_groups_are_capped_beside_the_weeks() -> None:
    bounds = PeriodBounds((PeriodCap("week", practice_periods=2),))
    cells = [
        ("A", "2025-W01", "2025-01"),
        ("B", "2025-W01", "2025-01"),
        ("C", "2025-W01", "2025-01"),
    ]
    rows = _rows(1, cells, [3, 1, 2])
    kept = rows.filter(pl.Series(period_keep_mask(rows, K, bounds)))
    assert sorted(kept["practice_code"].to_list()) == ["B", "C"]


def test_the_cut_of_one_patient_depends_only_on_their_own_rows() -> None:
    rows = _random_rows(2)
    alone = rows.filter(pl.col("patient_key") == 5)
    with_others = rows.filter(pl.Series(period_keep_mask(rows, K, BOUNDS))).filter(
        pl.col("patient_key") == 5
    )
    by_itself = alone.filter(pl.Series(period_keep_mask(alone, K, BOUNDS)))
    assert with_others[PRIORITY].sort().to_list() == by_itself[PRIORITY].sort().to_list()


def test_the_same_priorities_keep_the_same_rows_whatever_the_order() -> None:
    rows = _random_rows(3)
    shuffled = rows.sample(fraction=1.0, shuffle=True, seed=9)
    first = rows.filter(pl.Series(period_keep_mask(rows, K, BOUNDS)))
    second = shuffled.filter(pl.Series(period_keep_mask(shuffled, K, BOUNDS)))
    assert first.sort(PRIORITY).equals(second.sort(PRIORITY))


# verification


def _write(tmp_path: Path, frame: pl.DataFrame, name: str = "a.parquet") -> Path:
    path = tmp_path / name
    frame.drop(PRIORITY).write_parquet(path)
    return path


@pytest.mark.parametrize(
    ("cells", "broken"),
    [
        ([("A", "2025-W01", "2025-01")] * 3, "3 rows in one week"),
        ([("A", f"2025-W0{w}", "2025-01") for w in range(1, 5)], "rows in 4 weeks"),
        ([(p, "2025-W01", "2025-01") for p in "ABCD"], "rows in 4 (practice, week) groups"),
        ([("A", f"2025-W{w:02d}", f"2025-0{w}") for w in (1, 2, 3)], "rows in 3 months"),
        ([("A", f"2025-W0{w}", "2025-01") for w in (1, 1, 2, 2, 3)], "5 rows in one month"),
    ],
)
def test_verification_refuses_files_that_break_a_bound(
    tmp_path: Path, cells: list[tuple[str, str, str]], broken: str
) -> None:
    path = _write(tmp_path, _rows(11, cells, list(range(len(cells)))))
    with pytest.raises(BoundViolationError, match=broken.replace("(", r"\(").replace(")", r"\)")):
        verify_bound([path], K, method=KEYED_HASH_PERIOD_BOUND_METHOD, period_bounds=BOUNDS)


def test_verification_refuses_the_total_bound_too(tmp_path: Path) -> None:
    cells = [("A", f"2025-W0{w}", "2025-01") for w in (1, 1, 2, 2, 3, 3)]
    path = _write(tmp_path, _rows(11, cells, list(range(6))))
    with pytest.raises(BoundViolationError, match="6 rows, above the bound of 5"):
        verify_bound([path], 5, period_bounds=BOUNDS)


def test_verification_counts_a_patient_across_files_and_passes(tmp_path: Path) -> None:
    rows = _random_rows(4)
    kept = rows.filter(pl.Series(period_keep_mask(rows, K, BOUNDS)))
    paths = [
        _write(tmp_path, kept.filter(pl.col("month") == m), f"{m}.parquet")
        for m in kept["month"].unique().to_list()
    ]
    bound = verify_bound(
        paths, K, method=KEYED_HASH_PERIOD_BOUND_METHOD, seed=3, period_bounds=BOUNDS
    )
    assert (bound.verified, bound.period_bounds, bound.seed) == (True, BOUNDS, 3)
    one_pass = bound_maxima(paths, BOUNDS, rows_per_pass=10**9)
    many_passes = bound_maxima(paths, BOUNDS, rows_per_pass=100)
    assert one_pass == many_passes
    assert not violations(one_pass, K, BOUNDS)
    # the raw rows break the bounds, spread over the same files
    raw = [
        _write(tmp_path, rows.filter(pl.col("month") == m), f"raw-{m}.parquet")
        for m in rows["month"].unique().to_list()
    ]
    assert len(violations(bound_maxima(raw, BOUNDS, rows_per_pass=100), K, BOUNDS)) == 7


# records


def test_the_manifest_records_the_period_bounds_and_old_manifests_read_as_before() -> None:
    bound = ContributionBound(6, True, KEYED_HASH_PERIOD_BOUND_METHOD, 3, BOUNDS)
    manifest = VersionManifest("d", "v000001", "2025-01-01T00:00:00Z", (), (), bound, {})
    assert VersionManifest.from_json(manifest.to_json()).bound == bound
    old = ContributionBound(24, True, "keyed-hash-k-per-patient", 3)
    old_json = VersionManifest("d", "v1", "t", (), (), old, {}).to_json()
    assert "period_bounds" not in json.loads(old_json)["bound"]
    assert not VersionManifest.from_json(old_json).bound.period_bounds  # type: ignore[union-attr]


def test_period_bounds_must_be_positive_and_name_a_period() -> None:
    with pytest.raises(ValueError, match="positive"):
        PeriodCap("week", rows=0)
    with pytest.raises(ValueError, match="one of"):
        PeriodCap("day", rows=1)
    with pytest.raises(ValueError, match="no cap"):
        PeriodCap("week")
    assert PeriodBounds.from_dict(BOUNDS.to_dict()) == BOUNDS


def test_the_cut_counts_the_patients_each_step_dropped_rows_of() -> None:
    rows = _random_rows(3)
    cut = period_cut(rows, K, BOUNDS)
    steps = cut_steps(K, BOUNDS)
    assert [(s.kind, s.period, s.limit) for s in steps] == [
        (BoundKind.ROWS_PER_PERIOD, "week", 2),
        (BoundKind.PERIODS, "week", 3),
        (BoundKind.PRACTICE_PERIODS, "week", 3),
        (BoundKind.ROWS_PER_PERIOD, "month", 4),
        (BoundKind.PERIODS, "month", 2),
        (BoundKind.PRACTICE_PERIODS, "month", 2),
        (BoundKind.TOTAL_ROWS, None, K),
    ]
    truth = true_patients_cut(rows, K, BOUNDS)
    assert list(cut.patients_cut) == truth
    assert all(count > 0 for count in truth[:3])  # the fixture makes the week caps bite
    assert np.array_equal(cut.keep, period_keep_mask(rows, K, BOUNDS))


def test_with_the_total_alone_the_cut_counts_patients_over_it() -> None:
    rows = _random_rows(4)
    over = int((rows.group_by("patient_key").len()["len"] > 20).sum())
    assert period_cut(rows, 20, PeriodBounds()).patients_cut == (over,)
    assert over == true_patients_cut(rows, 20, PeriodBounds())[0] > 0

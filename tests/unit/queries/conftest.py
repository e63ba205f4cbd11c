"""Tiny hand-made dataset versions for the query engine's tests.

Every frame here is small enough that a query runs in a few milliseconds, and its truth is
known: in the "tiny" frames no patient has more than `TINY_K` rows, so no bounding ever
drops a row and the true aggregates are the plain Polars aggregates of `tiny_frame()`.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from dpgate_server.queries import QueryLimits
from dpgate_server.store.bounding import verify_bound
from dpgate_server.store.metadata import ColumnKind, ColumnSpec, DatasetMetadata, Visibility
from dpgate_server.store.store import ContributionBound, DatasetStore, DatasetVersion
from dpgate_server.vocabulary.accounting import Accounting

TINY_K = 4
PRACTICES = tuple(f"P{i:03d}" for i in range(60))
PRACTICES_WITH_ROWS = PRACTICES[:50]
"""The last ten practices have no appointments: their cells must still appear."""
ICBS = tuple(f"I{i}" for i in range(6))
MODES = ("Face-to-Face", "Telephone", "Video Conference/Online", "Home Visit", "Unknown")
STATUSES = ("Attended", "DNA", "Unknown")
DAYS = tuple(dt.date(2025, 1, 1) + dt.timedelta(days=i) for i in range(14))
WEEKS = ("2025-W01", "2025-W02", "2025-W03")
HUGE_LIMITS = QueryLimits(max_epsilon=Decimal(10**6), max_rho=Decimal(10**6))
"""Limits allowing a spend so large the noise is zero with probability ~1 (exact answers)."""
HUGE_EPSILON = 10**5


def icb_of(practice: str) -> str:
    return ICBS[int(practice[1:]) // 10]


def week_of(day: dt.date) -> str:
    year, week, _ = day.isocalendar()
    return f"{year}-W{week:02d}"


def tiny_metadata(dataset_id: str, accounting: Accounting = Accounting.PURE_DP) -> DatasetMetadata:
    def public(name: str, kind: ColumnKind, **kw: object) -> ColumnSpec:
        return ColumnSpec(name, kind, Visibility.PUBLIC, f"{name} (test)", **kw)  # type: ignore[arg-type]

    return DatasetMetadata(
        dataset_id=dataset_id,
        title="tiny test appointments",
        description="hand-made rows for engine tests",
        privacy_unit="patient_key",
        max_contributions=TINY_K,
        accounting=accounting,
        max_rows=1_000_000,
        period_start=DAYS[0],
        period_end=DAYS[-1],
        columns=(
            ColumnSpec("patient_key", ColumnKind.INTEGER, Visibility.PRIVATE, "patient"),
            public("practice_code", ColumnKind.STRING, groupable=True, filterable=True,
                   values=PRACTICES, key_table="practices"),
            public("icb_code", ColumnKind.STRING, groupable=True, filterable=True,
                   values=ICBS, key_table="practices"),
            public("appointment_date", ColumnKind.DATE, groupable=True, filterable=True,
                   values=DAYS, key_table="calendar"),
            public("week", ColumnKind.STRING, groupable=True, filterable=True,
                   values=WEEKS, key_table="calendar"),
            public("hour", ColumnKind.INTEGER, groupable=True, filterable=True,
                   values=tuple(range(24)), bounds=(0, 23)),
            public("duration_minutes", ColumnKind.INTEGER, filterable=True, bounds=(0, 60),
                   summable=True),
            public("lead_time_days", ColumnKind.INTEGER, bounds=(0, 90), summable=True),
            public("mode", ColumnKind.STRING, groupable=True, filterable=True, values=MODES),
            public("status", ColumnKind.STRING, groupable=True, filterable=True, values=STATUSES),
            public("notes_band", ColumnKind.STRING),
        ),
        public_tables=("practices", "calendar"),
    )  # fmt: skip


def tiny_frame(patients: int = 1_500, seed: int = 1, max_rows: int = TINY_K) -> pl.DataFrame:
    """Rows of `patients` patients, each with 1..max_rows rows at one home practice.

    Durations include nulls and values above 60 (clamped by SUM).
    """
    rng = np.random.default_rng(seed)
    per_patient = rng.integers(1, max_rows + 1, patients)
    patient = np.repeat(np.arange(patients, dtype=np.int64) * 7919 + 11, per_patient)
    home = rng.integers(0, len(PRACTICES_WITH_ROWS), patients)
    practice = np.array(PRACTICES_WITH_ROWS)[np.repeat(home, per_patient)]
    return _rows(rng, patient, practice)


def heavy_rows(rows: int = 500, seed: int = 2) -> pl.DataFrame:
    """One patient with `rows` appointments spread over every practice, mode, hour and day."""
    rng = np.random.default_rng(seed)
    patient = np.full(rows, 424_242, dtype=np.int64)
    practice = np.array(PRACTICES)[np.arange(rows) % len(PRACTICES)]
    return _rows(rng, patient, practice)


def _rows(rng: np.random.Generator, patient: np.ndarray, practice: np.ndarray) -> pl.DataFrame:
    n = patient.size
    days = [DAYS[i] for i in rng.integers(0, len(DAYS), n)]
    duration = rng.integers(0, 91, n).astype(float)
    duration[rng.random(n) < 0.05] = np.nan
    return pl.DataFrame(
        {
            "patient_key": patient,
            "practice_code": practice,
            "icb_code": [icb_of(p) for p in practice],
            "appointment_date": days,
            "week": [week_of(d) for d in days],
            "hour": rng.integers(0, 24, n).astype(np.int32),
            "duration_minutes": duration,
            "lead_time_days": rng.integers(0, 120, n),
            "mode": rng.choice(MODES, n),
            "status": rng.choice(STATUSES, n, p=[0.85, 0.1, 0.05]),
            "notes_band": rng.choice(["a", "b"], n),
        },
        schema_overrides={"hour": pl.Int32, "lead_time_days": pl.Int64},
    ).with_columns(pl.col("duration_minutes").fill_nan(None).cast(pl.Int64))


def publish(
    store: DatasetStore,
    metadata: DatasetMetadata,
    frame: pl.DataFrame,
    *,
    verify: bool,
) -> DatasetVersion:
    """Write `frame` as one month file plus public tables; verify the bound if asked."""
    builder = store.begin_version(metadata)
    path = builder.appointments_path("2025-01")
    frame.sample(fraction=1.0, shuffle=True, seed=3).write_parquet(path)
    pl.DataFrame(
        {
            "practice_code": list(PRACTICES),
            "icb_code": [icb_of(p) for p in PRACTICES],
            "list_size": [1000] * len(PRACTICES),
        }
    ).write_parquet(builder.public_table_path("practices"))
    pl.DataFrame(
        {"appointment_date": list(DAYS), "week": [week_of(d) for d in DAYS]}
    ).write_parquet(builder.public_table_path("calendar"))
    bound: ContributionBound | None = (
        verify_bound([path], metadata.max_contributions) if verify else None
    )
    return store.publish(builder, bound, {"test": True})


def bounded(frame: pl.DataFrame, k: int, seed: int = 5) -> pl.DataFrame:
    """`frame` cut to k random rows per patient (what publishing does)."""
    rank = pl.int_range(pl.len()).shuffle(seed=seed).over("patient_key")
    return frame.filter(rank < k)


@dataclass(frozen=True)
class TinyVersions:
    store: DatasetStore
    frame: pl.DataFrame
    verified: DatasetVersion
    unverified: DatasetVersion
    zcdp: DatasetVersion


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> TinyVersions:
    """The same tiny frame published three ways (verified, unverified, zCDP)."""
    store = DatasetStore(Path(tmp_path_factory.mktemp("tiny_store")))
    frame = tiny_frame()
    return TinyVersions(
        store=store,
        frame=frame,
        verified=publish(store, tiny_metadata("tiny"), frame, verify=True),
        unverified=publish(store, tiny_metadata("tiny_raw"), frame, verify=False),
        zcdp=publish(store, tiny_metadata("tiny_zcdp", Accounting.ZCDP), frame, verify=True),
    )

"""An independent reference of the publish cut's steps, patient by patient in plain Python,
for the true counts of patients each bound dropped rows of (the bias figure's truth).

It shares no code with store.period_bounding: each patient's rows are sorted by priority
and every step applied to them in the cut's order (per period cap: k rows per period, g
periods by their best row, c (practice, period) groups by their best row; then K rows).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np
import polars as pl

from dpgate_server.store.period_bounding import PRIORITY
from dpgate_server.store.period_bounds import PeriodBounds

Row = dict[str, Any]


def true_patients_cut(
    frame: pl.DataFrame, max_contributions: int, bounds: PeriodBounds
) -> list[int]:
    """Per step of the cut (caps in order, then the total), the patients who lost a row."""
    patients: dict[Any, list[Row]] = defaultdict(list)
    for row in frame.iter_rows(named=True):
        patients[row["patient_key"]].append(row)
    steps = [
        (cap.period, kind, limit)
        for cap in bounds.caps
        for kind, limit in (
            ("rows", cap.rows),
            ("periods", cap.periods),
            ("practice_periods", cap.practice_periods),
        )
        if limit is not None
    ]
    counts = [0] * (len(steps) + 1)
    for rows in patients.values():
        alive = sorted(rows, key=lambda r: r[PRIORITY])
        for index, (period, kind, limit) in enumerate(steps):
            kept = _step(alive, period, kind, limit)
            counts[index] += len(kept) < len(alive)
            alive = kept
        counts[-1] += len(alive) > max_contributions
    return counts


def _step(rows: list[Row], period: str, kind: str, limit: int) -> list[Row]:
    """`rows` (sorted by priority) after one cap."""
    if kind == "rows":
        seen: dict[Any, int] = defaultdict(int)
        kept = []
        for row in rows:
            seen[row[period]] += 1
            if seen[row[period]] <= limit:
                kept.append(row)
        return kept

    def group(row: Row) -> tuple[Any, ...]:
        return (row[period],) if kind == "periods" else (row["practice_code"], row[period])

    order: list[tuple[Any, ...]] = []
    for row in rows:  # the first row met of a group is its best
        if group(row) not in order:
            order.append(group(row))
    chosen = set(order[:limit])
    return [row for row in rows if group(row) in chosen]


def heavy_patient_rows(seed: int, patients: int = 300) -> pl.DataFrame:
    """Patients with 1 to 39 rows at one or two practices over 10 weeks in 3 months, with
    random priorities: every bound of a small policy bites."""
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

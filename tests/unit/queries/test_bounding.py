"""Patient-level bounding: no patient moves any query by more than the bound.

The heavy-patient tests publish a dataset D whose patients have one row each, and D'
= D plus one patient with 500 appointments spread over every practice, ICB, mode, hour
and day. With a spend so large the noise is zero, each answer is the exact aggregate of
what the plan kept, so `D' - D` is exactly what the heavy patient contributed; summed
over all cells it must stay within bound x per-row sensitivity (and reach it, or the
test could not fail).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pytest

from dpgate_server.queries import Aggregate, BoundingMethod, Filter, Query, Spend, prepare, run
from dpgate_server.queries.bounding import choose_bounding
from dpgate_server.store.store import ContributionBound, DatasetStore, DatasetVersion
from tests.unit.queries.conftest import (
    HUGE_EPSILON,
    HUGE_LIMITS,
    TINY_K,
    TinyVersions,
    bounded,
    heavy_rows,
    publish,
    tiny_frame,
    tiny_metadata,
)


def test_no_record_means_per_query_truncation() -> None:
    assert choose_bounding(None, 4).method is BoundingMethod.PER_QUERY


def test_unverified_record_means_per_query_truncation() -> None:
    record = ContributionBound(max_contributions=4, verified=False, method="claimed")
    assert choose_bounding(record, 4).method is BoundingMethod.PER_QUERY


def test_verified_record_means_row_level_unit_with_its_bound() -> None:
    record = ContributionBound(max_contributions=4, verified=True, method="random-k")
    chosen = choose_bounding(record, 4)
    assert (chosen.method, chosen.max_contributions, chosen.d_in) == (
        BoundingMethod.PUBLISH_TIME,
        4,
        4,
    )


def test_smaller_requested_bound_truncates_per_query_and_is_charged_for_it() -> None:
    record = ContributionBound(max_contributions=4, verified=True, method="random-k")
    chosen = choose_bounding(record, 2)
    assert (chosen.method, chosen.max_contributions, chosen.d_in) == (
        BoundingMethod.PER_QUERY,
        2,
        1,
    )


def test_smaller_request_costs_proportionally_less(tiny: TinyVersions) -> None:
    query = Query("tiny", Aggregate.count(), spend=Spend.epsilon(1))
    full = prepare(tiny.verified, query)
    half = prepare(tiny.verified, Query("tiny", Aggregate.count(), spend=Spend.epsilon(1),
                                        max_contributions=2))  # fmt: skip
    assert half.calibration.noise_scale == pytest.approx(full.calibration.noise_scale / 2)
    assert half.cost_units == full.cost_units


def test_unverified_version_is_never_queried_with_the_row_level_unit(
    tiny: TinyVersions,
) -> None:
    for group_by in [(), ("practice_code",), ("mode", "week")]:
        release = run(
            tiny.unverified,
            Query("tiny_raw", Aggregate.count(), group_by=group_by, spend=Spend.epsilon(1)),
        )
        assert release.bounding is BoundingMethod.PER_QUERY


@dataclass(frozen=True)
class HeavyVersions:
    without_raw: DatasetVersion
    with_raw: DatasetVersion
    without_bounded: DatasetVersion
    with_bounded: DatasetVersion


@pytest.fixture(scope="module")
def heavy(tmp_path_factory: pytest.TempPathFactory) -> HeavyVersions:
    store = DatasetStore(Path(tmp_path_factory.mktemp("heavy_store")))
    base = tiny_frame(patients=1_500, seed=9, max_rows=1)
    plus = pl.concat([base, heavy_rows(500)])
    return HeavyVersions(
        without_raw=publish(store, tiny_metadata("d_raw"), base, verify=False),
        with_raw=publish(store, tiny_metadata("d_plus_raw"), plus, verify=False),
        without_bounded=publish(store, tiny_metadata("d_bounded"), base, verify=True),
        with_bounded=publish(store, tiny_metadata("d_plus_bounded"), bounded(plus, TINY_K),
                             verify=True),
    )  # fmt: skip


QUERIES = {
    "total count": (Aggregate.count(), (), (), 1),
    "count by practice": (Aggregate.count(), ("practice_code",), (), 1),
    "count by practice x mode": (Aggregate.count(), ("practice_code", "mode"), (), 1),
    "count by icb x day": (Aggregate.count(), ("appointment_date", "icb_code"), (), 1),
    "minutes by practice": (Aggregate.sum("duration_minutes"), ("practice_code",), (), 60),
    "lead time by hour, not DNA": (
        Aggregate.sum("lead_time_days"), ("hour",), (Filter("status", "!=", ("DNA",)),), 90),
    "count by mode, early days": (
        Aggregate.count(), ("mode",), (Filter("appointment_date", "<", ("2025-01-08",)),), 1),
}  # fmt: skip


def _answer(version: DatasetVersion, name: str, k: int | None) -> dict[tuple[object, ...], int]:
    aggregate, group_by, filters, _ = QUERIES[name]
    query = Query(version.dataset_id, aggregate, filters, group_by,
                  Spend.epsilon(HUGE_EPSILON), max_contributions=k)  # fmt: skip
    return {cell.key: cell.value for cell in run(version, query, HUGE_LIMITS).cells}


PATHS = [
    ("raw version, per-query truncation", "raw", None, TINY_K),
    ("raw version, smaller bound", "raw", 1, 1),
    ("bounded version, row-level unit", "bounded", None, TINY_K),
    ("bounded version, smaller bound", "bounded", 2, 2),
]


@pytest.mark.parametrize("name", list(QUERIES))
@pytest.mark.parametrize(("kind", "requested", "bound"), [p[1:] for p in PATHS],
                         ids=[p[0] for p in PATHS])  # fmt: skip
def test_a_patient_with_500_appointments_moves_no_query_by_more_than_the_bound(
    heavy: HeavyVersions, name: str, kind: str, requested: int | None, bound: int
) -> None:
    without = getattr(heavy, f"without_{kind}")
    with_heavy = getattr(heavy, f"with_{kind}")
    sensitivity = QUERIES[name][3]
    for _ in range(2):  # truncation is random: two draws of it
        a, b = _answer(without, name, requested), _answer(with_heavy, name, requested)
        assert a.keys() == b.keys()
        moved = sum(abs(b[key] - a[key]) for key in a)
        assert moved <= bound * sensitivity
        if name == "total count":
            assert moved == bound  # the heavy patient did contribute: the test can fail


def test_the_heavy_patient_really_has_500_rows_in_the_raw_version(heavy: HeavyVersions) -> None:
    counts = heavy.with_raw.scan_appointments().group_by("patient_key").len().collect()
    assert counts["len"].max() == 500
    assert heavy.with_raw.manifest.bound is None

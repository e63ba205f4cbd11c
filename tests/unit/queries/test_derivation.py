"""Derived answers: cells of a release added up, free, with exact intervals of sums.

Statistical tests run real releases on tiny publish-bounded versions where no patient
exceeds the bound, so the version's bounded value of every cell and every sum is the plain
Polars aggregate of the frame. The derived cells of one release sum disjoint sets of
independently noised cells, so their coverage events are independent: the observed
coverage is binomial around the exact coverage of a sum of n draws (at least the level),
and the tolerance is 6 standard deviations (a false alarm below 1e-8 per check).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import polars as pl
import pytest

from dpgate_server.queries import Aggregate, Filter, Query, Release, Spend, prepare, run
from dpgate_server.queries.derivation import CELLS, answer_keys, best_derivation, derive
from dpgate_server.queries.model import BoundingMethod
from dpgate_server.store.metadata import ColumnSpec
from dpgate_server.store.store import DatasetVersion
from dpgate_shared import noise_sums
from tests.unit.queries.conftest import HUGE_EPSILON, HUGE_LIMITS, PRACTICES, TinyVersions

LEVEL = 0.95
TOLERANCE_SDS = 6.0


def count(
    version: DatasetVersion,
    group_by: Sequence[str],
    filters: Sequence[Filter] = (),
    spend: Spend | None = None,
) -> Query:
    return Query(
        version.dataset_id,
        Aggregate.count(),
        filters=tuple(filters),
        group_by=tuple(group_by),
        spend=spend or Spend.epsilon(0.5),
    )


def derived_from(version: DatasetVersion, asked: Query, source: Release) -> pl.DataFrame | None:
    prepared = prepare(version, asked, HUGE_LIMITS)
    found = derive(prepared, "rel_source", source, answer_keys(version, prepared))
    return None if found is None else found.release.frame()


def truth(frame: pl.DataFrame, group_by: Sequence[str], condition: pl.Expr | None) -> dict:
    rows = frame if condition is None else frame.filter(condition)
    if not group_by:
        return {(): rows.height}
    return {tuple(r[:-1]): r[-1] for r in rows.group_by(list(group_by)).len().iter_rows()}


def assert_coverage(hits: np.ndarray, cells: int, scale: float, mechanism: str) -> None:
    width = noise_sums.half_width(mechanism, scale, LEVEL, cells)
    exact = noise_sums.coverage(mechanism, scale, width, cells)
    assert exact >= LEVEL
    observed = float(np.mean(hits))
    sd = math.sqrt(exact * (1 - exact) / hits.size)
    assert abs(observed - exact) < TOLERANCE_SDS * sd, (observed, exact, hits.size)


# Which questions a release answers


def test_a_coarser_grouping_with_selections_of_grouped_values_is_derivable(
    tiny: TinyVersions,
) -> None:
    v = tiny.verified
    exact = run(
        v, count(v, ("practice_code", "mode"), spend=Spend.epsilon(HUGE_EPSILON)), HUGE_LIMITS
    )
    asked = count(v, ("practice_code",), [Filter("mode", "in", ("Telephone", "Home Visit"))])
    frame = derived_from(v, asked, exact)
    assert frame is not None
    expected = truth(
        tiny.frame, ("practice_code",), pl.col("mode").is_in(["Telephone", "Home Visit"])
    )
    assert frame.columns == ["practice_code", "value", "ci_low", "ci_high", CELLS]
    assert frame["practice_code"].to_list() == sorted(PRACTICES)
    assert {(p,): v for p, v in frame.select("practice_code", "value").iter_rows()} == {
        (p,): expected.get((p,), 0) for p in PRACTICES
    }
    assert set(frame[CELLS].to_list()) == {2}


def test_an_ungrouped_total_sums_every_cell(tiny: TinyVersions) -> None:
    v = tiny.verified
    exact = run(v, count(v, ("week",), spend=Spend.epsilon(HUGE_EPSILON)), HUGE_LIMITS)
    frame = derived_from(v, count(v, ()), exact)
    assert frame is not None
    assert frame.select("value", CELLS).row(0) == (tiny.frame.height, 3)


@pytest.mark.parametrize(
    ("group_by", "filters"),
    [
        (("practice_code",), [Filter("status", "=", ("DNA",))]),  # not a grouped column
        (("practice_code", "status"), []),  # a column the release did not group by
        (("practice_code",), [Filter("hour", "<", (12,))]),
    ],
)
def test_filters_or_groups_the_cells_do_not_separate_are_not_derivable(
    tiny: TinyVersions, group_by: tuple[str, ...], filters: list[Filter]
) -> None:
    v = tiny.verified
    source = run(v, count(v, ("practice_code", "mode")), HUGE_LIMITS)
    assert derived_from(v, count(v, group_by, filters), source) is None


def test_a_question_without_the_releases_filters_is_not_derivable(tiny: TinyVersions) -> None:
    v = tiny.verified
    source = run(v, count(v, ("mode",), [Filter("status", "=", ("DNA",))]), HUGE_LIMITS)
    assert derived_from(v, count(v, ()), source) is None
    assert derived_from(v, count(v, (), [Filter("status", "=", ("DNA",))]), source) is not None


def test_another_aggregate_or_bound_is_not_derivable(tiny: TinyVersions) -> None:
    v = tiny.verified
    source = run(v, count(v, ("mode",)), HUGE_LIMITS)
    minutes = Query(v.dataset_id, Aggregate.sum("duration_minutes"), spend=Spend.epsilon(1))
    assert derived_from(v, minutes, source) is None
    smaller_bound = Query(
        v.dataset_id, Aggregate.count(), spend=Spend.epsilon(1), max_contributions=2
    )
    assert prepare(v, smaller_bound).bounding.method is BoundingMethod.PER_QUERY
    assert derived_from(v, smaller_bound, source) is None


def test_a_version_truncated_per_query_is_never_derived(tiny: TinyVersions) -> None:
    v = tiny.unverified
    source = run(v, count(v, ("mode",)), HUGE_LIMITS)
    assert source.bounding is BoundingMethod.PER_QUERY
    assert derived_from(v, count(v, ()), source) is None


def test_a_release_of_another_version_is_never_used(tiny: TinyVersions) -> None:
    source = run(tiny.zcdp, count(tiny.zcdp, ("mode",), spend=Spend.rho(1)), HUGE_LIMITS)
    other = run(tiny.verified, count(tiny.verified, ("mode",)), HUGE_LIMITS)
    asked = count(tiny.zcdp, (), spend=Spend.rho(1))
    assert derived_from(tiny.zcdp, asked, other) is None
    assert derived_from(tiny.zcdp, asked, source) is not None


def test_the_least_noisy_source_is_chosen(tiny: TinyVersions) -> None:
    v = tiny.verified
    fine = run(v, count(v, ("practice_code", "mode"), spend=Spend.epsilon(1)), HUGE_LIMITS)
    coarse = run(v, count(v, ("mode",), spend=Spend.epsilon(0.5)), HUGE_LIMITS)
    prepared = prepare(v, count(v, ()), HUGE_LIMITS)
    best = best_derivation(
        prepared, [("rel_fine", fine), ("rel_coarse", coarse)], lambda: answer_keys(v, prepared)
    )
    assert best is not None
    assert best.source_release_id == "rel_coarse"  # 5 cells at scale 8, not 300 at scale 4
    assert best.most_cells == 5
    assert best.release.cost_units == 0


# Coverage of the version's bounded value


def test_derived_laplace_sums_cover_the_bounded_value_at_their_level(tiny: TinyVersions) -> None:
    v = tiny.verified
    frame = tiny.frame
    source_query = count(v, ("practice_code", "week"), spend=Spend.epsilon(0.5))  # scale 8
    asked = {
        "by_practice": (count(v, ("practice_code",)), None, 3),
        "by_week": (count(v, ("week",)), None, 60),
        "early_weeks": (
            count(v, ("practice_code",), [Filter("week", "in", ("2025-W01", "2025-W02"))]),
            pl.col("week").is_in(["2025-W01", "2025-W02"]),
            2,
        ),
    }
    prepared = {name: prepare(v, q) for name, (q, _, _) in asked.items()}
    keys = {name: answer_keys(v, p) for name, p in prepared.items()}
    hits: dict[str, list[bool]] = {name: [] for name in asked}
    for _ in range(150):
        source = run(v, source_query)
        for name, (query, condition, cells) in asked.items():
            found = derive(prepared[name], "rel", source, keys[name])
            assert found is not None
            table = found.release.frame()
            assert set(table[CELLS].to_list()) == {cells}
            true = truth(frame, query.group_by, condition)
            for row in table.iter_rows(named=True):
                key = tuple(row[c] for c in query.group_by)
                hits[name].append(row["ci_low"] <= true.get(key, 0) <= row["ci_high"])
    assert_coverage(np.array(hits["by_practice"]), 3, 8.0, noise_sums.LAPLACE)
    assert_coverage(np.array(hits["by_week"]), 60, 8.0, noise_sums.LAPLACE)
    assert_coverage(np.array(hits["early_weeks"]), 2, 8.0, noise_sums.LAPLACE)


def test_derived_gaussian_sums_cover_the_bounded_value_at_their_level(tiny: TinyVersions) -> None:
    v = tiny.zcdp
    condition = pl.col("mode").is_in(["Telephone", "Video Conference/Online"])
    source_query = count(v, ("practice_code", "mode"), spend=Spend.rho(0.5))  # sigma 4
    asked = count(
        v,
        ("practice_code",),
        [Filter("mode", "in", ("Telephone", "Video Conference/Online"))],
        spend=Spend.rho(0.5),
    )
    prepared = prepare(v, asked)
    keys = answer_keys(v, prepared)
    true = truth(tiny.frame, ("practice_code",), condition)
    hits = []
    for _ in range(150):
        found = derive(prepared, "rel", run(v, source_query), keys)
        assert found is not None
        for practice, low, high in (
            found.release.frame().select("practice_code", "ci_low", "ci_high").iter_rows()
        ):
            hits.append(low <= true.get((practice,), 0) <= high)
    assert_coverage(np.array(hits), 2, 4.0, noise_sums.GAUSSIAN)


# The invariant summing over a column relies on


@pytest.mark.slow
def test_every_grouped_value_of_the_demo_data_is_in_its_public_key_set(
    small_dataset: DatasetVersion,
) -> None:
    """Summing a release over a column drops no row only if no row's value is outside the
    column's public set (nulls included): ingest enforces it; the demo data must hold it."""
    scan = small_dataset.scan_appointments()
    grouped: list[ColumnSpec] = [c for c in small_dataset.metadata.columns if c.groupable]
    assert grouped
    for spec in grouped:
        assert spec.values is not None
        outside = (
            scan.select(pl.col(spec.name))
            .filter(pl.col(spec.name).is_null() | ~pl.col(spec.name).is_in(list(spec.values)))
            .select(pl.len())
            .collect()
            .item()
        )
        assert outside == 0, spec.name

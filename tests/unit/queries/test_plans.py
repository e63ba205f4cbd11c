"""Every plan template, checked against the truth with a spend so large the noise is zero.

At epsilon = 1e5 the integer Laplace scale is 4e-5: P(noise != 0) is below exp(-25000),
so each released value equals the template's exact aggregate.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from opendp.context import domain_of
from opendp.domains import with_margin
from opendp.extras.polars import Margin

from dpgate_server.queries import Aggregate, Filter, Query, Release, Spend, prepare, run
from dpgate_server.queries.count_column import cheapest_count_column
from dpgate_server.queries.keys import KeySets
from dpgate_server.queries.plans import VALUE_COLUMN, _domain, build_plan, make_measurement
from dpgate_server.store.store import DatasetVersion
from tests.unit.queries.conftest import (
    HUGE_EPSILON,
    HUGE_LIMITS,
    MODES,
    PRACTICES,
    TinyVersions,
    icb_of,
)


def _exact(version: DatasetVersion, aggregate: Aggregate, **kw: object) -> Release:
    spend = Spend.rho(HUGE_EPSILON) if "zcdp" in version.dataset_id else Spend.epsilon(HUGE_EPSILON)
    query = Query(version.dataset_id, aggregate, spend=spend, **kw)  # type: ignore[arg-type]
    return run(version, query, HUGE_LIMITS)


def _cells(release: Release) -> dict[tuple[object, ...], int]:
    return {cell.key: cell.value for cell in release.cells}


@pytest.mark.parametrize("dataset", ["verified", "unverified", "zcdp"])
def test_total_count_template_counts_every_row(tiny: TinyVersions, dataset: str) -> None:
    release = _exact(getattr(tiny, dataset), Aggregate.count())
    assert _cells(release) == {(): tiny.frame.height}


@pytest.mark.parametrize("dataset", ["verified", "unverified"])
def test_grouped_count_template_has_every_public_key_even_without_rows(
    tiny: TinyVersions, dataset: str
) -> None:
    release = _exact(getattr(tiny, dataset), Aggregate.count(), group_by=("practice_code",))
    truth = dict(tiny.frame.group_by("practice_code").len().iter_rows())
    assert _cells(release) == {(p,): truth.get(p, 0) for p in PRACTICES}
    assert _cells(release)[("P059",)] == 0


@pytest.mark.parametrize(("column", "high"), [("duration_minutes", 60), ("lead_time_days", 90)])
def test_sum_template_clamps_each_row_to_the_public_bounds(
    tiny: TinyVersions, column: str, high: int
) -> None:
    release = _exact(tiny.verified, Aggregate.sum(column))
    clamped = tiny.frame.select(pl.col(column).fill_null(0).clip(0, high).sum()).item()
    raw = tiny.frame.select(pl.col(column).sum()).item()
    assert _cells(release) == {(): clamped}
    assert clamped < raw  # the data holds values above the bound, so clamping bit


def test_grouped_sum_template_matches_clamped_sums_per_key(tiny: TinyVersions) -> None:
    release = _exact(tiny.unverified, Aggregate.sum("duration_minutes"), group_by=("mode",))
    truth = dict(
        tiny.frame.group_by("mode")
        .agg(pl.col("duration_minutes").fill_null(0).clip(0, 60).sum())
        .iter_rows()
    )
    assert _cells(release) == {(m,): truth[m] for m in MODES}


FILTERS = [
    (Filter("hour", "=", (9,)), pl.col("hour") == 9),
    (Filter("hour", "!=", (9,)), pl.col("hour") != 9),
    (Filter("hour", "<", (9,)), pl.col("hour") < 9),
    (Filter("hour", "<=", (9,)), pl.col("hour") <= 9),
    (Filter("hour", ">", (9,)), pl.col("hour") > 9),
    (Filter("hour", ">=", (9,)), pl.col("hour") >= 9),
    (Filter("mode", "in", ("Telephone", "Home Visit")),
     pl.col("mode").is_in(["Telephone", "Home Visit"])),
    (Filter("status", "=", ("DNA",)), pl.col("status") == "DNA"),
    (Filter("appointment_date", ">=", ("2025-01-08",)),
     pl.col("appointment_date") >= dt.date(2025, 1, 8)),
    (Filter("appointment_date", "in", (dt.date(2025, 1, 2), dt.date(2025, 1, 3))),
     pl.col("appointment_date").is_in([dt.date(2025, 1, 2), dt.date(2025, 1, 3)])),
    (Filter("duration_minutes", "<", (30,)), pl.col("duration_minutes") < 30),
    (Filter("week", "=", ("2025-W02",)), pl.col("week") == "2025-W02"),
]  # fmt: skip


@pytest.mark.parametrize(("dpgate_filter", "polars_filter"), FILTERS, ids=lambda f: str(f)[:40])
@pytest.mark.parametrize("dataset", ["verified", "unverified"])
def test_filtered_count_template_applies_each_operator(
    tiny: TinyVersions, dataset: str, dpgate_filter: Filter, polars_filter: pl.Expr
) -> None:
    release = _exact(getattr(tiny, dataset), Aggregate.count(), filters=(dpgate_filter,))
    assert _cells(release) == {(): tiny.frame.filter(polars_filter).height}


def test_filters_are_a_conjunction(tiny: TinyVersions) -> None:
    filters = (Filter("status", "=", ("DNA",)), Filter("hour", ">=", (12,)))
    release = _exact(tiny.verified, Aggregate.sum("duration_minutes"), filters=filters)
    truth = tiny.frame.filter((pl.col("status") == "DNA") & (pl.col("hour") >= 12))
    assert _cells(release) == {(): truth["duration_minutes"].fill_null(0).clip(0, 60).sum()}


def test_nested_group_by_uses_the_public_tables_actual_pairs(tiny: TinyVersions) -> None:
    release = _exact(tiny.verified, Aggregate.count(), group_by=("practice_code", "icb_code"))
    assert release.group_by == ("icb_code", "practice_code")
    assert [cell.key for cell in release.cells] == [(icb_of(p), p) for p in PRACTICES]


def test_independent_group_by_is_a_cross_product(tiny: TinyVersions) -> None:
    release = _exact(tiny.verified, Aggregate.count(), group_by=("practice_code", "mode"))
    assert len(release.cells) == len(MODES) * len(PRACTICES)
    rows = tiny.frame.group_by("mode", "practice_code").len().iter_rows()
    truth = {(m, p): n for m, p, n in rows}
    assert _cells(release) == {
        (m, p): truth.get((m, p), 0) for m in sorted(MODES) for p in PRACTICES
    }


def test_date_group_by_releases_every_day_of_the_calendar(tiny: TinyVersions) -> None:
    release = _exact(tiny.verified, Aggregate.count(), group_by=("appointment_date",))
    truth = dict(tiny.frame.group_by("appointment_date").len().iter_rows())
    assert _cells(release) == {(d,): n for d, n in sorted(truth.items())}
    assert len(release.cells) == 14


def test_filter_on_a_grouped_column_restricts_its_keys(tiny: TinyVersions) -> None:
    release = _exact(
        tiny.verified,
        Aggregate.count(),
        group_by=("mode",),
        filters=(Filter("mode", "in", ("Unknown", "Telephone")),),
    )
    assert [cell.key for cell in release.cells] == [("Telephone",), ("Unknown",)]


def _plan_text(version: DatasetVersion, query: Query) -> str:
    prepared = prepare(version, query)
    schema = version.scan_appointments().collect_schema()
    plan = build_plan(schema, prepared.validated, prepared.bounding, "patient_key", None)
    return plan.explain(optimized=False)


def test_in_filter_reaches_polars_as_or_of_equalities_of_checked_literals(
    tiny: TinyVersions,
) -> None:
    query = Query(
        "tiny",
        Aggregate.count(),
        filters=(Filter("mode", "in", ("Unknown", "Telephone", "Unknown")),),
        spend=Spend.epsilon(1),
    )
    text = _plan_text(tiny.verified, query)
    assert "is_in" not in text
    assert text.count('col("mode")) == ("Telephone")') == 1
    assert text.count('col("mode")) == ("Unknown")') == 1


def test_date_filter_compares_day_numbers_not_date_literals(tiny: TinyVersions) -> None:
    query = Query(
        "tiny",
        Aggregate.count(),
        filters=(Filter("appointment_date", "<", ("2025-01-08",)),),
        spend=Spend.epsilon(1),
    )
    text = _plan_text(tiny.verified, query)
    assert "strict_cast(Int32)" in text or "cast(Int32)" in text
    assert str((dt.date(2025, 1, 8) - dt.date(1970, 1, 1)).days) in text


@pytest.mark.parametrize(("dataset", "truncates"), [("verified", False), ("unverified", True)])
def test_only_per_query_bounding_adds_the_truncation_filter(
    tiny: TinyVersions, dataset: str, truncates: bool
) -> None:
    version = getattr(tiny, dataset)
    text = _plan_text(version, Query(version.dataset_id, Aggregate.count(), spend=Spend.epsilon(1)))
    assert ("shuffle" in text) is truncates


_PROJECTION = re.compile(r"PROJECT\[(?P<columns>[^\]]*)\] (?P<read>\d+)/(?P<of>\d+) COLUMNS")


def _private_columns_read(version: DatasetVersion, query: Query) -> tuple[set[str], str]:
    """Columns the optimized plan reads from the private table, and the plan's text."""
    prepared = prepare(version, query, HUGE_LIMITS)
    schema = version.scan_appointments().collect_schema()
    v = prepared.validated
    keys = None
    if v.group_by:
        keys = KeySets.of_version(version, dict(schema)).frame(v.group_by, v.filters)
    plan = build_plan(schema, v, prepared.bounding, "patient_key", keys, "appointment_date")
    text = plan.explain(optimized=True)
    private = [m for m in _PROJECTION.finditer(text) if int(m["of"]) == len(schema)]
    assert len(private) == 1, text
    return {c.strip().strip('"') for c in private[0]["columns"].split(",")}, text


@pytest.mark.parametrize(
    ("aggregate", "kw", "needed"),
    [
        (Aggregate.count(), {}, {"appointment_date"}),
        (Aggregate.count(), {"filters": (Filter("status", "=", ("DNA",)),)}, {"status"}),
        (Aggregate.count(), {"group_by": ("practice_code", "week")}, {"practice_code", "week"}),
        (Aggregate.sum("duration_minutes"), {"group_by": ("practice_code",)},
         {"practice_code", "duration_minutes"}),
        (Aggregate.count(), {"group_by": ("mode",), "filters": (Filter("status", "=", ("DNA",)),)},
         {"mode", "status"}),
    ],
)  # fmt: skip
def test_a_bounded_version_plan_reads_only_the_needed_columns_and_has_no_window(
    tiny: TinyVersions, aggregate: Aggregate, kw: dict[str, object], needed: set[str]
) -> None:
    """The engine's speed rests on this shape (bench/engine.py): on a version verified at
    publish, the plan neither re-truncates (no window over the privacy unit, no shuffle)
    nor reads a column the answer does not need (projection reaches the private scan)."""
    query = Query("tiny", aggregate, spend=Spend.epsilon(1), **kw)  # type: ignore[arg-type]
    read, text = _private_columns_read(tiny.verified, query)
    assert read == needed
    assert ".over(" not in text
    assert "shuffle" not in text


def test_a_query_asking_for_fewer_rows_than_the_version_bound_truncates_again(
    tiny: TinyVersions,
) -> None:
    """The window is dropped only when the version's verified bound covers the request."""
    query = Query("tiny", Aggregate.count(), spend=Spend.epsilon(1), max_contributions=1)
    read, text = _private_columns_read(tiny.verified, query)
    assert read == {"patient_key"}
    assert '.over([col("patient_key")])' in text


def _write(path: Path, frame: pl.DataFrame) -> Path:
    frame.write_parquet(path)
    return path


def test_a_total_count_reads_the_fixed_width_column_with_the_fewest_bytes(
    tmp_path: Path,
) -> None:
    rng = np.random.default_rng(3)
    n = 20_000
    frame = pl.DataFrame(
        {
            "patient_key": rng.integers(0, 2**62, n),  # random: incompressible
            "status": ["DNA"] * n,  # tiny on disk, but a string to decode per row
            "day": pl.Series([dt.date(2025, 1, 1)] * n),  # one value: a few bytes
            "hour": rng.integers(0, 24, n).astype(np.int32),
        }
    )
    paths = [_write(tmp_path / "a.parquet", frame), _write(tmp_path / "b.parquet", frame)]
    schema = dict(frame.schema)
    assert cheapest_count_column(paths, schema, "patient_key") == "day"
    strings_only = {"status": pl.String()}
    assert cheapest_count_column(paths, strings_only, "patient_key") == "patient_key"
    assert cheapest_count_column([], schema, "patient_key") == "patient_key"


def test_a_total_count_over_a_column_with_nulls_still_counts_every_row(
    tiny: TinyVersions,
) -> None:
    """The count column is only something to read: its nulls are rows like any other."""
    version = tiny.verified
    scan = version.scan_appointments()
    schema = scan.collect_schema()
    column = cheapest_count_column(version.appointment_paths(), schema, "patient_key")
    assert column != "patient_key"
    query = Query("tiny", Aggregate.count(), spend=Spend.epsilon(HUGE_EPSILON))
    prepared = prepare(version, query, HUGE_LIMITS)
    plan = build_plan(schema, prepared.validated, prepared.bounding, "patient_key", None, column)
    measurement = make_measurement(
        scan, version.metadata, prepared.bounding, plan, prepared.calibration.global_scale
    )
    all_null = scan.with_columns(pl.lit(None, dtype=schema[column]).alias(column))
    assert measurement(all_null).collect().get_column(VALUE_COLUMN).item() == tiny.frame.height


def test_the_shared_opendp_domain_is_the_one_the_scan_would_give(tiny: TinyVersions) -> None:
    """The domain is built once per schema and row ceiling (plans._domain) and must be
    exactly what OpenDP infers from the version's own scan."""
    version = tiny.verified
    scan = version.scan_appointments()
    shared = _domain(tuple(scan.collect_schema().items()), version.metadata.max_rows)
    own = with_margin(
        domain_of(scan, infer=True), Margin(by=[], max_length=version.metadata.max_rows)
    )
    assert shared == own
    assert _domain(tuple(scan.collect_schema().items()), version.metadata.max_rows) is shared

"""What per-period bounds cost (issue 18 item 1), from first principles and against OpenDP.

Three layers:

- OpenDP 0.16's own figure for each shape at scale 1, against the hand-computed change:
  rho = l2^2 / 2 with l2 = min(K, k * sqrt(min(g, K))), epsilon = l1 = min(K, g * k);
- the engine on versions cut to per-period bounds and verified at publish: for every shape
  (count and clamped sum; total, week, month, practice x week, practice x month, practice,
  week x mode; pure DP and zCDP) dpgate's noise scale is the first-principles one and its
  charge equals OpenDP's map of the measurement it runs;
- a statistical test: the noise of a per-period-bounded count has the promised spread.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import opendp.prelude as dp
import polars as pl
import pytest
from opendp.extras.polars import Bound, Margin

from dpgate_server.queries import Aggregate, BoundingMethod, Filter, Query, Spend, prepare, run
from dpgate_server.queries.bounding import choose_bounding
from dpgate_server.queries.engine import build_measurement
from dpgate_server.queries.plans import opendp_d_in
from dpgate_server.spend import to_units_ceil
from dpgate_server.store.bounding import KEYED_HASH_PERIOD_BOUND_METHOD, verify_bound
from dpgate_server.store.metadata import ColumnKind, ColumnSpec, DatasetMetadata, Visibility
from dpgate_server.store.period_bounding import PRIORITY, period_keep_mask
from dpgate_server.store.period_bounds import (
    GroupingBound,
    PeriodBounds,
    PeriodCap,
    grouping_bounds,
    patient_change,
)
from dpgate_server.store.store import DatasetStore, DatasetVersion
from dpgate_server.vocabulary.accounting import Accounting

dp.enable_features("contrib")

K = 24

# OpenDP's figures at scale 1, by hand


def _opendp_cost(bounds: list[Any], by: list[str], zcdp: bool, few_weeks: bool = False) -> float:
    schema = {"patient_key": pl.Int64, "practice_code": pl.String, "week": pl.String,
              "month": pl.String, "mode": pl.String}  # fmt: skip
    empty = pl.LazyFrame(schema=schema)
    domain = dp.with_margin(dp.domain_of(empty, infer=True), Margin(by=[], max_length=10**6))
    values = {"practice_code": ["A", "B"], "week": [f"2025-W{w:02d}" for w in range(1, 53)],
              "month": [f"2025-{m:02d}" for m in range(1, 13)], "mode": ["x"]}  # fmt: skip
    if few_weeks:
        values["week"] = values["week"][:2]
    keys = pl.LazyFrame({by[0]: values[by[0]]}) if by else None
    for column in by[1:]:
        keys = keys.join(pl.LazyFrame({column: values[column]}), how="cross")  # type: ignore[union-attr]
    count = dp.len(signed=True).alias("n")
    plan = (
        empty.select(count)
        if keys is None
        else keys.join(empty.group_by(by).agg(count), on=by, how="left", nulls_equal=True)
    )
    metric, d_in = dp.unit_of(contributions=bounds)
    measure = dp.zero_concentrated_divergence() if zcdp else dp.max_divergence()
    return float(
        dp.m.make_private_lazyframe(domain, metric, measure, plan, global_scale=1.0).map(d_in)
    )


def _as_opendp(bounds: tuple[GroupingBound, ...]) -> list[Any]:
    return [Bound(by=list(b.by), per_group=b.per_group, num_groups=b.num_groups) for b in bounds]


WEEK_3 = PeriodBounds((PeriodCap("week", rows=3),))
WEEK_3_G10 = PeriodBounds((PeriodCap("week", rows=3, periods=10),))
WEEK_3_G10_PW10 = PeriodBounds((PeriodCap("week", rows=3, periods=10, practice_periods=10),))
WEEK_2_G5 = PeriodBounds((PeriodCap("week", rows=2, periods=5),))


@pytest.mark.parametrize(
    ("bounds", "by", "rho", "epsilon"),
    [
        (PeriodBounds(), ("week",), 288, 24),  # the K-only charge
        (WEEK_3, ("week",), 108, 24),  # 3 * sqrt(24): no weeks cap, g = K
        (WEEK_3_G10, ("week",), 45, 24),  # 3 * sqrt(10); g * k = 30 > K: no pure-DP gain
        (WEEK_3_G10, ("practice_code", "week"), 108, 24),  # g does not carry down
        (WEEK_3_G10_PW10, ("practice_code", "week"), 45, 24),  # the group-count cap does
        (WEEK_3_G10_PW10, ("week",), 45, 24),
        (WEEK_3_G10_PW10, ("week", "mode"), 108, 24),
        (WEEK_3_G10_PW10, ("month",), 288, 24),
        (WEEK_3_G10_PW10, (), 288, 24),
        (WEEK_2_G5, ("week",), 10, 10),  # g * k = 10 < K: pure DP gains too
        (WEEK_2_G5, ("practice_code",), 288, 24),
    ],
)
def test_opendp_charges_what_the_first_principles_say(
    bounds: PeriodBounds, by: tuple[str, ...], rho: float, epsilon: float
) -> None:
    """52 weeks, 12 months, 2 practices, 1 mode of public keys."""
    grouping = grouping_bounds(K, bounds)
    cells = {(): 1, ("week",): 52, ("practice_code", "week"): 104, ("week", "mode"): 52,
             ("month",): 12, ("practice_code",): 2}[by]  # fmt: skip
    change = patient_change(grouping, by, cells)
    assert change.l2_squared / 2 == rho
    assert change.l1 == epsilon
    assert _opendp_cost(_as_opendp(grouping), list(by), zcdp=True) == pytest.approx(rho, rel=1e-12)
    assert _opendp_cost(_as_opendp(grouping), list(by), zcdp=False) == pytest.approx(
        epsilon, rel=1e-12
    )


@pytest.mark.parametrize(("zcdp", "expected"), [(True, 9.0), (False, 6.0)])
def test_a_patient_is_in_no_more_groups_than_there_are_public_keys(
    zcdp: bool, expected: float
) -> None:
    """Two public weeks: g = 2 however loose the bounds (rho 3^2 * 2 / 2, epsilon 3 * 2)."""
    grouping = grouping_bounds(K, WEEK_3)
    change = patient_change(grouping, ("week",), cells=2)
    assert (change.l2_squared / 2 if zcdp else change.l1) == expected
    cost = _opendp_cost(_as_opendp(grouping), ["week"], zcdp=zcdp, few_weeks=True)
    assert cost == pytest.approx(expected, rel=1e-12)


def test_a_period_bound_without_the_total_is_refused_by_opendp() -> None:
    with pytest.raises(dp.OpenDPException, match="per_group` contributions is unknown"):
        _opendp_cost([Bound(by=["week"], per_group=3, num_groups=10)], [], zcdp=True)


# versions cut to per-period bounds

DAYS = tuple(dt.date(2025, 1, 6) + dt.timedelta(days=i) for i in range(84))
"""Twelve ISO weeks (2025-W02..W13) over three months."""
PRACTICES = tuple(f"P{i:02d}" for i in range(12))
MODES = ("Face-to-Face", "Telephone")
ZCDP_BOUNDS = PeriodBounds(
    (
        PeriodCap("week", rows=3, periods=10, practice_periods=10),
        PeriodCap("month", rows=8, periods=2, practice_periods=2),
    )
)
"""Count by week: l2^2 = min(576, 9 * 10) = 90; by month: min(576, 64 * 2) = 128."""
PURE_BOUNDS = PeriodBounds(
    (
        PeriodCap("week", rows=2, periods=5, practice_periods=5),
        PeriodCap("month", rows=5, periods=2, practice_periods=2),
    )
)
"""Count by week: l1 = min(24, 2 * 5) = 10; by month: min(24, 5 * 2) = 10."""


def _week(day: dt.date) -> str:
    year, week, _ = day.isocalendar()
    return f"{year}-W{week:02d}"


WEEKS = tuple(dict.fromkeys(_week(d) for d in DAYS))
MONTHS = tuple(dict.fromkeys(d.strftime("%Y-%m") for d in DAYS))


def _metadata(dataset_id: str, accounting: Accounting, bounds: PeriodBounds) -> DatasetMetadata:
    def public(name: str, values: tuple[str, ...], key_table: str | None) -> ColumnSpec:
        return ColumnSpec(name, ColumnKind.STRING, Visibility.PUBLIC, name, groupable=True,
                          filterable=True, values=values, key_table=key_table)  # fmt: skip

    return DatasetMetadata(
        dataset_id=dataset_id,
        title="period-bounded test appointments",
        description="rows cut to per-period bounds",
        privacy_unit="patient_key",
        max_contributions=K,
        accounting=accounting,
        max_rows=1_000_000,
        period_start=DAYS[0],
        period_end=DAYS[-1],
        columns=(
            ColumnSpec("patient_key", ColumnKind.INTEGER, Visibility.PRIVATE, "patient"),
            public("practice_code", PRACTICES, "practices"),
            public("week", WEEKS, "calendar"),
            public("month", MONTHS, "calendar"),
            public("mode", MODES, None),
            ColumnSpec(
                "duration_minutes",
                ColumnKind.INTEGER,
                Visibility.PUBLIC,
                "minutes",
                bounds=(0, 60),
                summable=True,
            ),
        ),
        public_tables=("practices", "calendar"),
        period_bounds=bounds,
    )


def _frame(patients: int, seed: int) -> pl.DataFrame:
    """Heavy patients (1..60 rows over 12 weeks) at one home practice each."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(1, 61, patients)
    patient = np.repeat(np.arange(patients, dtype=np.int64) * 104_729 + 3, counts)
    home = np.array(PRACTICES)[np.repeat(rng.integers(0, len(PRACTICES), patients), counts)]
    days = [DAYS[i] for i in rng.integers(0, len(DAYS), patient.size)]
    return pl.DataFrame(
        {
            "patient_key": patient,
            "practice_code": home,
            "week": [_week(d) for d in days],
            "month": [d.strftime("%Y-%m") for d in days],
            "mode": rng.choice(MODES, patient.size),
            "duration_minutes": rng.integers(0, 90, patient.size),
        }
    )


def _publish(store: DatasetStore, metadata: DatasetMetadata, seed: int) -> DatasetVersion:
    raw = _frame(2_000, seed)
    priority = np.random.default_rng(seed + 1).integers(0, 2**63, raw.height).astype(np.uint64)
    keep = period_keep_mask(
        raw.with_columns(pl.Series(PRIORITY, priority)), K, metadata.period_bounds
    )
    frame = raw.filter(pl.Series(keep))
    builder = store.begin_version(metadata)
    paths = []
    for month in MONTHS:
        path = builder.appointments_path(month)
        frame.filter(pl.col("month") == month).write_parquet(path)
        paths.append(path)
    pl.DataFrame({"practice_code": list(PRACTICES)}).write_parquet(
        builder.public_table_path("practices")
    )
    pl.DataFrame(
        {"week": [_week(d) for d in DAYS], "month": [d.strftime("%Y-%m") for d in DAYS]}
    ).unique(maintain_order=True).write_parquet(builder.public_table_path("calendar"))
    bound = verify_bound(
        paths,
        K,
        method=KEYED_HASH_PERIOD_BOUND_METHOD,
        seed=seed,
        period_bounds=metadata.period_bounds,
    )
    return store.publish(builder, bound, {"test": True})


@dataclass(frozen=True)
class PeriodVersions:
    zcdp: DatasetVersion
    pure: DatasetVersion
    zcdp_frame: pl.DataFrame


@pytest.fixture(scope="module")
def versions(tmp_path_factory: pytest.TempPathFactory) -> PeriodVersions:
    store = DatasetStore(Path(tmp_path_factory.mktemp("period_store")))
    zcdp = _publish(store, _metadata("periods_zcdp", Accounting.ZCDP, ZCDP_BOUNDS), 11)
    pure = _publish(store, _metadata("periods_pure", Accounting.PURE_DP, PURE_BOUNDS), 12)
    frame = pl.read_parquet([str(p) for p in zcdp.appointment_paths()])
    return PeriodVersions(zcdp, pure, frame)


SHAPES: list[tuple[tuple[str, ...], int, int]] = [
    # group_by, zCDP l2^2 (ZCDP_BOUNDS), pure-DP l1 (PURE_BOUNDS)
    ((), 576, 24),
    (("week",), 90, 10),
    (("month",), 128, 10),
    (("practice_code", "week"), 90, 10),
    (("practice_code", "month"), 128, 10),
    (("practice_code",), 576, 24),
    (("week", "mode"), 216, 24),  # k = 3 carries down, g does not: 9 * 24
]


@pytest.mark.parametrize(("group_by", "l2_squared", "l1"), SHAPES)
@pytest.mark.parametrize("aggregate", [Aggregate.count(), Aggregate.sum("duration_minutes")])
@pytest.mark.parametrize("accounting", [Accounting.ZCDP, Accounting.PURE_DP])
def test_the_charge_is_first_principles_and_equals_opendps_map(
    versions: PeriodVersions,
    group_by: tuple[str, ...],
    l2_squared: int,
    l1: int,
    aggregate: Aggregate,
    accounting: Accounting,
) -> None:
    zcdp = accounting is Accounting.ZCDP
    version = versions.zcdp if zcdp else versions.pure
    spend = Spend.rho(0.5) if zcdp else Spend.epsilon(0.5)
    query = Query(version.dataset_id, aggregate, group_by=group_by, spend=spend)
    prepared = prepare(version, query)
    assert prepared.bounding.method is BoundingMethod.PUBLISH_TIME
    change = prepared.bounding.change(group_by, prepared.cells)
    assert (change.l2_squared if zcdp else change.l1) == (l2_squared if zcdp else l1)
    clamp = 1 if aggregate.column is None else 60
    expected_scale = clamp * (math.sqrt(l2_squared / (2 * 0.5)) if zcdp else l1 / 0.5)
    assert prepared.calibration.noise_scale == pytest.approx(expected_scale, rel=1e-9)
    assert prepared.cost_units == 500_000_000
    _, measurement = build_measurement(version, prepared)
    d_in = opendp_d_in(prepared.bounding, version.metadata.privacy_unit)
    opendp_units = to_units_ceil(measurement.map(d_in))
    assert prepared.cost_units - 1 <= opendp_units <= prepared.cost_units
    assert measurement.check(d_in, 0.5)


def test_per_period_bounds_cut_the_zcdp_scale_of_practice_by_week(
    versions: PeriodVersions,
) -> None:
    """At equal rho, practice x week noise SD is sqrt(576 / 90) = 2.5x below the K-only."""
    query = Query("periods_zcdp", Aggregate.count(), group_by=("practice_code", "week"),
                  spend=Spend.rho(0.5))  # fmt: skip
    bounded = prepare(versions.zcdp, query).calibration.noise_scale
    k_only = prepare(versions.zcdp, replace(query, max_contributions=K - 1))
    assert k_only.bounding.method is BoundingMethod.PER_QUERY  # below K: truncates again
    assert bounded == pytest.approx(math.sqrt(90), rel=1e-9)
    assert k_only.calibration.noise_scale / bounded == pytest.approx(23 / math.sqrt(90))


def test_an_unverified_record_claims_no_period_bound(versions: PeriodVersions) -> None:
    record = versions.zcdp.manifest.bound
    assert record is not None
    chosen = choose_bounding(replace(record, verified=False), K)
    assert (chosen.method, chosen.period_bounds) == (BoundingMethod.PER_QUERY, ())
    assert choose_bounding(record, K).period_bounds == grouping_bounds(K, ZCDP_BOUNDS)


# statistics

RUNS = 12
Z = 5.0


def test_noise_of_a_per_period_bounded_count_has_the_promised_spread(
    versions: PeriodVersions,
) -> None:
    """Practice x week (144 cells) twelve times: 1,728 draws of integer Gaussian noise of
    scale sqrt(90 / (2 * 0.5)) = 9.49; mean and variance within 5 standard errors of the
    exact distribution's (a false failure below 1e-6)."""
    truth = {
        (p, w): n
        for p, w, n in versions.zcdp_frame.group_by("practice_code", "week").len().iter_rows()
    }
    query = Query("periods_zcdp", Aggregate.count(), group_by=("practice_code", "week"),
                  spend=Spend.rho(0.5))  # fmt: skip
    noise = []
    scale = None
    for _ in range(RUNS):
        release = run(versions.zcdp, query)
        scale = release.noise_scale
        for cell in release.cells:
            noise.append(cell.value - truth.get(cell.key, 0))  # type: ignore[arg-type]
    assert scale == pytest.approx(math.sqrt(90), rel=1e-9)
    draws = np.array(noise, dtype=float)
    assert draws.size == RUNS * len(PRACTICES) * len(WEEKS)
    x = np.arange(-600, 601, dtype=float)
    p = np.exp(-(x * x) / (2 * scale * scale))
    p /= p.sum()
    second, fourth = float((p * x**2).sum()), float((p * x**4).sum())
    n = draws.size
    assert abs(draws.mean()) <= Z * math.sqrt(second / n)
    assert abs((draws**2).mean() - second) <= Z * math.sqrt((fourth - second**2) / n)
    # and far from the K-only scale of 24 (variance 576)
    assert (draws**2).mean() < 2 * second


@pytest.mark.parametrize(
    ("group_by", "filters", "l2_squared", "l1"),
    [
        (("week",), (Filter("week", "in", WEEKS[:3]),), 27, 6),  # 3 keys: g = 3
        (("practice_code", "week"), (Filter("week", "=", (WEEKS[0],)),), 90, 10),
        (("week",), (Filter("practice_code", "=", ("P01",)),), 90, 10),
        (("practice_code",), (Filter("week", "=", (WEEKS[0],)),), 576, 24),
        (("month",), (Filter("month", "in", MONTHS[:1]),), 64, 5),  # one key: c alone
    ],
)
@pytest.mark.parametrize("accounting", [Accounting.ZCDP, Accounting.PURE_DP])
def test_filters_on_the_keys_lower_g_and_opendp_agrees(
    versions: PeriodVersions,
    group_by: tuple[str, ...],
    filters: tuple[Filter, ...],
    l2_squared: int,
    l1: int,
    accounting: Accounting,
) -> None:
    """A filter on a grouped column releases fewer keys, so a patient is in fewer groups."""
    zcdp = accounting is Accounting.ZCDP
    version = versions.zcdp if zcdp else versions.pure
    spend = Spend.rho(0.5) if zcdp else Spend.epsilon(0.5)
    query = Query(version.dataset_id, Aggregate.count(), filters, group_by, spend)
    prepared = prepare(version, query)
    change = prepared.bounding.change(group_by, prepared.cells)
    if zcdp:
        assert change.l2_squared == l2_squared
    else:
        assert change.l1 == l1
    _, measurement = build_measurement(version, prepared)
    d_in = opendp_d_in(prepared.bounding, version.metadata.privacy_unit)
    assert to_units_ceil(measurement.map(d_in)) == prepared.cost_units == 500_000_000

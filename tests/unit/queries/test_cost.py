"""dpgate's own cost: exact, rounded up, and never below OpenDP's figure for the plan."""

from __future__ import annotations

import dataclasses
import itertools
import logging
from fractions import Fraction

import pytest

from dpgate_server.queries import (
    Aggregate,
    CostMismatchError,
    Filter,
    Query,
    Spend,
    execute,
    prepare,
)
from dpgate_server.queries.cost import calibrate, cost_units, cross_check, exact_cost
from dpgate_server.queries.engine import build_measurement
from dpgate_server.spend import to_units_ceil
from dpgate_server.store.store import DatasetVersion
from dpgate_server.vocabulary.accounting import Accounting
from tests.unit.queries.conftest import TinyVersions

PURE, ZCDP = Accounting.PURE_DP, Accounting.ZCDP


@pytest.mark.parametrize("units", [1, 7, 100_000_000, 1_000_000_000, 3_141_592_653])
def test_doubling_epsilon_halves_the_laplace_scale(units: int) -> None:
    once, twice = calibrate(PURE, 24, 1, units), calibrate(PURE, 24, 1, 2 * units)
    assert twice.noise_scale == pytest.approx(once.noise_scale / 2, rel=1e-11)


def test_epsilon_is_linear_in_the_bound() -> None:
    for bound in (1, 4, 24, 100):
        assert exact_cost(PURE, 2 * bound, 60, 37.5) == 2 * exact_cost(PURE, bound, 60, 37.5)
        assert exact_cost(PURE, bound, 60, 37.5) == Fraction(bound * 60) / Fraction(37.5)


def test_rho_is_quadratic_in_the_bound() -> None:
    for bound in (1, 4, 24, 100):
        assert exact_cost(ZCDP, 2 * bound, 1, 9.25) == 4 * exact_cost(ZCDP, bound, 1, 9.25)
        assert exact_cost(ZCDP, bound, 1, 9.25) == Fraction(bound**2, 2) / Fraction(9.25) ** 2


def test_cost_is_rounded_up_to_a_whole_unit() -> None:
    # epsilon = 1/3 exactly: 333,333,333.33... units charged as 333,333,334
    assert cost_units(PURE, 1, 1, 3.0) == 333_333_334


@pytest.mark.parametrize(("accounting", "bound", "sensitivity"), [
    (PURE, 24, 1), (PURE, 24, 60), (PURE, 3, 90), (ZCDP, 24, 1), (ZCDP, 4, 60), (ZCDP, 1, 1),
])  # fmt: skip
def test_calibrated_scale_costs_at_most_the_spend_and_at_least_one_unit_less(
    accounting: Accounting, bound: int, sensitivity: int
) -> None:
    for units in (1, 999, 123_456_789, 500_000_000, 1_000_000_000, 9_999_999_999):
        calibration = calibrate(accounting, bound, sensitivity, units)
        exact = exact_cost(accounting, bound, sensitivity, calibration.noise_scale) * 10**9
        assert units - 1 < exact <= units
        assert calibration.cost_units == units


def _opendp_cost_units(version: DatasetVersion, query: Query) -> tuple[int, int]:
    """(dpgate's cost units, OpenDP's map(d_in) in units) for the plan run() would build."""
    prepared = prepare(version, query)
    _, m = build_measurement(version, prepared)
    return prepared.cost_units, to_units_ceil(m.map(prepared.bounding.d_in))


SHAPES = list(itertools.product(
    ["verified", "unverified", "zcdp"],
    [Aggregate.count(), Aggregate.sum("duration_minutes"), Aggregate.sum("lead_time_days")],
    [(), ("practice_code",), ("mode", "week"), ("icb_code", "practice_code")],
    [(), (Filter("status", "=", ("DNA",)), Filter("appointment_date", "<", ("2025-01-09",)))],
    [None, 2],
))  # fmt: skip


@pytest.mark.parametrize(("dataset", "aggregate", "group_by", "filters", "bound"), SHAPES)
def test_cost_is_never_below_opendps_own_figure(
    tiny: TinyVersions,
    dataset: str,
    aggregate: Aggregate,
    group_by: tuple[str, ...],
    filters: tuple[Filter, ...],
    bound: int | None,
) -> None:
    version: DatasetVersion = getattr(tiny, dataset)
    spend = Spend.rho(0.3) if dataset == "zcdp" else Spend.epsilon(0.7)
    query = Query(version.dataset_id, aggregate, filters, group_by, spend, max_contributions=bound)
    dpgate, opendp = _opendp_cost_units(version, query)
    assert opendp <= dpgate
    assert dpgate == (300_000_000 if dataset == "zcdp" else 700_000_000)


def test_cross_check_refuses_and_logs_when_opendp_says_more(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.ERROR), pytest.raises(CostMismatchError) as caught:
        cross_check(1_000, 1.1e-6, True, "shape")
    assert caught.value.dpgate_units == 1_000
    assert caught.value.opendp_units == to_units_ceil(1.1e-6) > 1_000
    assert "cost disagreement, query refused" in caplog.text


def test_cross_check_refuses_when_opendp_check_fails() -> None:
    with pytest.raises(CostMismatchError):
        cross_check(1_000, 0.5e-6, False, "shape")


def test_cross_check_accepts_equal_figures() -> None:
    cross_check(1_000, 1e-6, True, "shape")


def test_a_prepared_query_with_an_understated_cost_is_refused_before_reading_data(
    tiny: TinyVersions,
) -> None:
    prepared = prepare(tiny.verified, Query("tiny", Aggregate.count(), spend=Spend.epsilon(1)))
    understated = dataclasses.replace(
        prepared,
        calibration=dataclasses.replace(prepared.calibration, cost_units=prepared.cost_units // 2),
    )
    with pytest.raises(CostMismatchError):
        execute(tiny.verified, understated)


def test_requested_spend_is_charged_exactly(tiny: TinyVersions) -> None:
    prepared = prepare(tiny.zcdp, Query("tiny_zcdp", Aggregate.count(), spend=Spend.rho(0.123)))
    assert prepared.cost_units == 123_000_000

"""Intervals from the exact integer-noise distributions, and previews of accuracy."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import opendp.prelude as dp
import pytest

from dpgate_server.queries import (
    Aggregate,
    InvalidQuery,
    Mechanism,
    Query,
    Spend,
    preview,
    run,
    with_confidence_level,
)
from dpgate_server.queries.accuracy import (
    coverage,
    half_width,
    largest_scale_for_half_width,
    tail_probability,
)
from dpgate_server.queries.cost import calibrate
from dpgate_server.vocabulary.errors import ErrorReason
from tests.unit.queries.conftest import TinyVersions, tiny_metadata

LAPLACE, GAUSSIAN = Mechanism.DISCRETE_LAPLACE, Mechanism.DISCRETE_GAUSSIAN
LEVELS = (0.5, 0.8, 0.9, 0.95, 0.99)


def _brute_coverage(mechanism: Mechanism, scale: float, t: int) -> float:
    """P(|X| <= t) by summing the pmf term by term (independent of the implementation)."""
    span = int(60 * scale) + t + 50
    if mechanism is LAPLACE:
        weights = [math.exp(-abs(x) / scale) for x in range(-span, span + 1)]
    else:
        weights = [math.exp(-(x * x) / (2 * scale * scale)) for x in range(-span, span + 1)]
    inside = math.fsum(
        w for x, w in zip(range(-span, span + 1), weights, strict=True) if abs(x) <= t
    )
    return inside / math.fsum(weights)


@pytest.mark.parametrize("mechanism", [LAPLACE, GAUSSIAN])
@pytest.mark.parametrize("scale", [0.4, 1.0, 3.7, 24.0, 61.5])
def test_half_width_is_the_smallest_integer_reaching_the_level(
    mechanism: Mechanism, scale: float
) -> None:
    for level in LEVELS:
        t = half_width(mechanism, scale, level)
        assert _brute_coverage(mechanism, scale, t) >= level - 1e-12
        if t > 0:
            assert _brute_coverage(mechanism, scale, t - 1) < level


@pytest.mark.parametrize("scale", [1_200.0, 5_000.0, 100_000.0])
def test_gaussian_tail_above_the_summation_threshold_matches_direct_sum(scale: float) -> None:
    t = int(1.96 * scale)
    span = int(40 * scale)
    x = np.arange(0, span + t, dtype=np.float64)
    w = np.exp(-(x * x) / (2 * scale * scale))
    direct = 2 * w[t + 1 :][::-1].sum() / (w[0] + 2 * w[1:][::-1].sum())
    assert tail_probability(GAUSSIAN, scale, t) == pytest.approx(direct, rel=1e-9)


@pytest.mark.parametrize("scale", [2.0, 48.0, 1_440.0, 20_000.0])
def test_half_width_agrees_with_opendp_to_one_step(scale: float) -> None:
    for level in LEVELS:
        alpha = 1 - level
        laplace = math.floor(dp.discrete_laplacian_scale_to_accuracy(scale, alpha))
        assert half_width(LAPLACE, scale, level) == laplace
        if scale <= 2_000:  # OpenDP sums the Gaussian tail term by term: slow above
            gaussian = math.floor(dp.discrete_gaussian_scale_to_accuracy(scale, alpha))
            assert half_width(GAUSSIAN, scale, level) in (gaussian - 1, gaussian)


@pytest.mark.parametrize("mechanism", [LAPLACE, GAUSSIAN])
def test_largest_scale_for_a_half_width_sits_on_the_boundary(mechanism: Mechanism) -> None:
    for target in (3.0, 40.5, 700.0):
        scale = largest_scale_for_half_width(mechanism, target, 0.95)
        assert half_width(mechanism, scale, 0.95) <= target
        assert coverage(mechanism, scale * 1.001, math.floor(target)) < 0.95


def test_interval_at_another_level_is_recomputed_from_the_stored_scale(
    tiny: TinyVersions,
) -> None:
    release = run(tiny.verified, Query("tiny", Aggregate.count(), spend=Spend.epsilon(0.2)))
    narrower = with_confidence_level(release, 0.5)
    assert narrower.half_width == half_width(LAPLACE, release.noise_scale, 0.5)
    assert narrower.half_width < release.half_width
    assert [c.value for c in narrower.cells] == [c.value for c in release.cells]
    assert narrower.cells[0].ci_high - narrower.cells[0].value == narrower.half_width
    assert with_confidence_level(narrower, 0.95) == release


def test_interval_level_outside_zero_one_is_refused(tiny: TinyVersions) -> None:
    release = run(tiny.verified, Query("tiny", Aggregate.count(), spend=Spend.epsilon(0.2)))
    with pytest.raises(InvalidQuery) as caught:
        with_confidence_level(release, 1.0)
    assert caught.value.reason is ErrorReason.BAD_CONFIDENCE


@pytest.mark.parametrize("dataset", ["verified", "zcdp"])
def test_preview_for_a_target_gives_the_smallest_spend_reaching_it(
    tiny: TinyVersions, dataset: str
) -> None:
    version = getattr(tiny, dataset)
    query = Query(version.dataset_id, Aggregate.sum("duration_minutes"), target_half_width=500)
    shown = preview(version, query)
    assert shown.half_width <= 500
    cheaper = calibrate(version.metadata.accounting, 4, 60, shown.spend_units - 1)
    assert half_width(shown.mechanism, cheaper.noise_scale, 0.95) > 500


def test_preview_for_a_spend_reports_half_width_cells_and_truncation_note(
    tiny: TinyVersions,
) -> None:
    query = Query("tiny", Aggregate.count(), group_by=("mode",), spend=Spend.epsilon(0.5))
    shown = preview(tiny.verified, query)
    assert shown.cells == 5
    assert shown.noise_scale == pytest.approx(8.0)
    assert shown.half_width == half_width(LAPLACE, shown.noise_scale, 0.95)
    assert "at most 4 random rows per patient" in shown.truncation_note


def test_preview_from_metadata_alone_needs_no_version() -> None:
    query = Query("tiny", Aggregate.count(), group_by=("practice_code",), spend=Spend.epsilon(1))
    shown = preview(tiny_metadata("tiny"), query)
    assert (shown.cells, shown.dataset_version, shown.key) == (60, None, None)


def test_preview_matches_the_release_it_describes(tiny: TinyVersions) -> None:
    query = Query("tiny", Aggregate.count(), group_by=("hour",), target_half_width=25)
    shown = preview(tiny.verified, query)
    release = run(tiny.verified, query)
    assert (shown.key, shown.half_width, shown.noise_scale, len(release.cells)) == (
        release.key,
        release.half_width,
        release.noise_scale,
        shown.cells,
    )
    assert release.cost_units == shown.spend_units


def test_higher_confidence_target_costs_more(tiny: TinyVersions) -> None:
    query = Query("tiny", Aggregate.count(), target_half_width=25)
    at_90 = preview(tiny.verified, dataclasses.replace(query, confidence_level=0.9))
    at_99 = preview(tiny.verified, dataclasses.replace(query, confidence_level=0.99))
    assert at_99.spend_units > at_90.spend_units

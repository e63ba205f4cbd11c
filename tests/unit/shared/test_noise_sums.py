"""The exact interval of a sum of independent integer noise draws (dpgate_shared.noise_sums).

Checked against closed forms (one Laplace draw; the normal law a sum of wide Gaussian draws
follows), against the distribution computed by direct convolution, against the server's
own one-cell intervals, and against simulation (fixed seeds; tolerances of 6 binomial
standard deviations, so a false alarm is below 1e-8 and a real error of ~0.5% fails).
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
import pytest

from dpgate_server.queries import accuracy
from dpgate_server.queries.model import Mechanism
from dpgate_shared import noise_sums

LEVEL = 0.95
DRAWS = 40_000
TOLERANCE_SDS = 6.0


def laplace_noise(
    rng: np.random.Generator, scale: float, size: int | tuple[int, ...]
) -> np.ndarray:
    """Integer Laplace as the difference of two geometric variables (as OpenDP draws it)."""
    p = -math.expm1(-1.0 / scale)  # 1 - q
    return rng.geometric(p, size) - rng.geometric(p, size)


def exact_pmf(mechanism: str, scale: float, cells: int) -> tuple[np.ndarray, np.ndarray]:
    """Support and pmf of a sum of `cells` draws, by direct convolution (small scales)."""
    span = math.ceil(60 * scale) + 10
    x = np.arange(-span, span + 1).astype(float)
    one = (
        np.exp(-np.abs(x) / scale)
        if mechanism == noise_sums.LAPLACE
        else np.exp(-x * x / (2 * scale**2))
    )
    one /= one.sum()
    total = one
    for _ in range(cells - 1):
        total = np.convolve(total, one)
    half = (len(total) - 1) // 2
    return np.arange(-half, half + 1), total


@pytest.mark.parametrize("scale", [0.8, 3.0, 48.0, 2880.0])
@pytest.mark.parametrize("t", [0, 1, 5, 100])
def test_one_laplace_draw_has_the_closed_form_coverage(scale: float, t: int) -> None:
    q = math.exp(-1.0 / scale)
    assert noise_sums.coverage(noise_sums.LAPLACE, scale, t) == pytest.approx(
        1.0 - 2.0 * q ** (t + 1) / (1.0 + q), abs=1e-12
    )


@pytest.mark.parametrize(
    ("mechanism", "scale"),
    [
        (Mechanism.DISCRETE_LAPLACE, 48.0),
        (Mechanism.DISCRETE_LAPLACE, 2880.0),
        (Mechanism.DISCRETE_GAUSSIAN, 7.5),
        (Mechanism.DISCRETE_GAUSSIAN, 3000.0),
    ],
)
@pytest.mark.parametrize("level", [0.5, 0.9, 0.95, 0.999])
def test_one_cell_half_width_is_the_servers(
    mechanism: Mechanism, scale: float, level: float
) -> None:
    assert noise_sums.half_width(mechanism.value, scale, level) == accuracy.half_width(
        mechanism, scale, level
    )


@pytest.mark.parametrize(
    ("mechanism", "scale", "cells"),
    [
        (noise_sums.LAPLACE, 3.0, 2),
        (noise_sums.LAPLACE, 12.0, 3),
        (noise_sums.LAPLACE, 0.7, 6),
        (noise_sums.GAUSSIAN, 4.0, 2),
        (noise_sums.GAUSSIAN, 0.6, 5),
    ],
)
def test_sum_coverage_equals_the_convolved_distribution(
    mechanism: str, scale: float, cells: int
) -> None:
    support, pmf = exact_pmf(mechanism, scale, cells)
    for t in (0, 1, 3, 10, 40):
        exact = float(pmf[np.abs(support) <= t].sum())
        assert noise_sums.coverage(mechanism, scale, t, cells) == pytest.approx(exact, abs=1e-10)


@pytest.mark.parametrize(
    ("mechanism", "cells"),
    [(noise_sums.LAPLACE, 2), (noise_sums.LAPLACE, 7), (noise_sums.GAUSSIAN, 3)],
)
def test_sum_half_width_is_the_smallest_that_reaches_the_level(mechanism: str, cells: int) -> None:
    support, pmf = exact_pmf(mechanism, 9.0, cells)
    t = noise_sums.half_width(mechanism, 9.0, LEVEL, cells)
    assert pmf[np.abs(support) <= t].sum() >= LEVEL
    assert pmf[np.abs(support) <= t - 1].sum() < LEVEL


@pytest.mark.parametrize(("sigma", "cells"), [(40.0, 2), (300.0, 9), (5000.0, 100)])
def test_a_sum_of_wide_gaussian_draws_is_normal_with_the_summed_variance(
    sigma: float, cells: int
) -> None:
    # A discrete Gaussian this wide has variance sigma^2 to double precision, and the sum
    # of n is N(0, n sigma^2) on the integers: P(|S| <= t) = P(|Z| < t + 1/2) up to the
    # midpoint rule's error, about f'(t) / 12 for the normal density f: below 0.1 / sd^2.
    sd = math.sqrt(cells) * sigma
    for t in (0, int(sd), int(2 * sd)):
        normal = 2.0 * NormalDist().cdf((t + 0.5) / sd) - 1.0
        assert noise_sums.coverage(noise_sums.GAUSSIAN, sigma, t, cells) == pytest.approx(
            normal, abs=0.1 / sd**2
        )
    width = noise_sums.half_width(noise_sums.GAUSSIAN, sigma, LEVEL, cells)
    assert width == math.ceil(NormalDist().inv_cdf((1 + LEVEL) / 2) * sd - 0.5)


def test_two_laplace_cells_need_more_than_the_normal_width() -> None:
    scale = 100.0
    normal = 1.959964 * math.sqrt(2 * noise_sums.variance(noise_sums.LAPLACE, scale))
    assert noise_sums.half_width(noise_sums.LAPLACE, scale, LEVEL, 2) > normal * 1.04


def test_many_cells_approach_the_normal_width() -> None:
    scale, cells = 48.0, 1000
    normal = 1.959964 * math.sqrt(cells * noise_sums.variance(noise_sums.LAPLACE, scale))
    assert noise_sums.half_width(noise_sums.LAPLACE, scale, LEVEL, cells) == pytest.approx(
        normal, rel=2e-3
    )


@pytest.mark.parametrize("cells", [2, 3, 20])
def test_simulated_laplace_sums_fall_within_the_half_width_at_least_at_the_level(
    cells: int,
) -> None:
    rng = np.random.default_rng(500 + cells)
    scale = 24.0
    width = noise_sums.half_width(noise_sums.LAPLACE, scale, LEVEL, cells)
    noise = laplace_noise(rng, scale, (DRAWS, cells)).sum(axis=1)
    observed = float(np.mean(np.abs(noise) <= width))
    sd = math.sqrt(LEVEL * (1 - LEVEL) / DRAWS)
    assert observed > LEVEL - TOLERANCE_SDS * sd
    # ...and not by much more than the exact coverage says (it is the smallest width).
    exact = noise_sums.coverage(noise_sums.LAPLACE, scale, width, cells)
    assert abs(observed - exact) < TOLERANCE_SDS * sd


def test_the_half_width_is_never_below_the_level_at_the_boundary() -> None:
    # A level equal to an exact coverage: the margin may widen by one, never narrow.
    scale, cells = 9.0, 4
    t = noise_sums.half_width(noise_sums.LAPLACE, scale, LEVEL, cells)
    boundary = noise_sums.coverage(noise_sums.LAPLACE, scale, t, cells)
    width = noise_sums.half_width(noise_sums.LAPLACE, scale, boundary, cells)
    assert width in (t, t + 1)
    assert noise_sums.coverage(noise_sums.LAPLACE, scale, width, cells) >= boundary

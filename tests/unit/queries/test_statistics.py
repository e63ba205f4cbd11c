"""Statistical tests of released noise on tiny frames where no patient exceeds the bound.

The truth of every cell is known (no bounding drops a row), so `value - truth` is a draw
of the noise. Each run releases 300 cells (practice x mode), and ten runs give 3,000
draws per mechanism. Tolerances are 5 standard errors of the exact distribution's
moments: a false failure has probability below 1e-6 per check.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest

from dpgate_server.queries import (
    Aggregate,
    Mechanism,
    Query,
    Release,
    Spend,
    run,
    with_confidence_level,
)
from dpgate_server.queries.accuracy import coverage
from dpgate_server.store.store import DatasetVersion
from tests.unit.queries.conftest import PRACTICES_WITH_ROWS, TinyVersions

RUNS = 10
SCALE = 10.0
Z = 5.0


@dataclass(frozen=True)
class Draws:
    noise: np.ndarray
    absent: np.ndarray
    releases: tuple[Release, ...]


def _draws(tiny: TinyVersions, version: DatasetVersion, spend: Spend) -> Draws:
    truth = {
        (m, p): n for p, m, n in tiny.frame.group_by("practice_code", "mode").len().iter_rows()
    }
    query = Query(version.dataset_id, Aggregate.count(), group_by=("practice_code", "mode"),
                  spend=spend)  # fmt: skip
    releases = tuple(run(version, query) for _ in range(RUNS))
    noise, absent = [], []
    for release in releases:
        for cell in release.cells:
            noise.append(cell.value - truth.get(cell.key, 0))
            if cell.key[1] not in PRACTICES_WITH_ROWS:
                absent.append(cell.value)
    return Draws(np.array(noise, dtype=float), np.array(absent, dtype=float), releases)


@pytest.fixture(scope="module")
def laplace(tiny: TinyVersions) -> Draws:
    """Per-query truncation path (unverified version); epsilon = k / scale = 0.4."""
    return _draws(tiny, tiny.unverified, Spend.epsilon(4 / SCALE))


@pytest.fixture(scope="module")
def laplace_bounded(tiny: TinyVersions) -> Draws:
    """Publish-time path (verified version), same epsilon."""
    return _draws(tiny, tiny.verified, Spend.epsilon(4 / SCALE))


@pytest.fixture(scope="module")
def gaussian(tiny: TinyVersions) -> Draws:
    """zCDP: rho = k^2 / (2 scale^2) = 0.08 gives sigma = 10."""
    return _draws(tiny, tiny.zcdp, Spend.rho(16 / (2 * SCALE**2)))


def _moments(mechanism: Mechanism, scale: float) -> tuple[float, float, float]:
    """Exact E|X|, E X^2 and E X^4 of the integer noise, by summing its pmf."""
    x = np.arange(-int(60 * scale), int(60 * scale) + 1, dtype=float)
    if mechanism is Mechanism.DISCRETE_LAPLACE:
        w = np.exp(-np.abs(x) / scale)
    else:
        w = np.exp(-(x * x) / (2 * scale * scale))
    p = w / w.sum()
    return float((p * np.abs(x)).sum()), float((p * x**2).sum()), float((p * x**4).sum())


@pytest.mark.parametrize("name", ["laplace", "laplace_bounded", "gaussian"])
def test_spend_of_k_over_scale_gives_that_scale(request: pytest.FixtureRequest, name: str) -> None:
    draws: Draws = request.getfixturevalue(name)
    scales = {r.noise_scale for r in draws.releases}
    assert len(scales) == 1
    assert scales.pop() == pytest.approx(SCALE, rel=1e-9)


@pytest.mark.parametrize("name", ["laplace", "laplace_bounded", "gaussian"])
def test_spread_of_repeated_answers_matches_the_reported_scale(
    request: pytest.FixtureRequest, name: str
) -> None:
    draws: Draws = request.getfixturevalue(name)
    release = draws.releases[0]
    mean_abs, second, fourth = _moments(release.mechanism, release.noise_scale)
    n = draws.noise.size
    assert n >= 2_000
    assert abs(np.abs(draws.noise).mean() - mean_abs) <= Z * math.sqrt((second - mean_abs**2) / n)
    assert abs((draws.noise**2).mean() - second) <= Z * math.sqrt((fourth - second**2) / n)
    assert abs(draws.noise.mean()) <= Z * math.sqrt(second / n)  # unbiased: no clamping


@pytest.mark.parametrize("name", ["laplace", "laplace_bounded", "gaussian"])
@pytest.mark.parametrize("level", [0.95, 0.5])
def test_interval_coverage_matches_its_exact_level(
    request: pytest.FixtureRequest, name: str, level: float
) -> None:
    draws: Draws = request.getfixturevalue(name)
    release = with_confidence_level(draws.releases[0], level)
    exact = coverage(release.mechanism, release.noise_scale, release.half_width)
    assert level <= exact < level + 0.05  # integer steps: exact coverage just above the level
    covered = np.abs(draws.noise) <= release.half_width
    assert abs(covered.mean() - exact) <= Z * math.sqrt(exact * (1 - exact) / covered.size)


def test_released_intervals_are_value_plus_minus_half_width(laplace: Draws) -> None:
    for release in laplace.releases:
        for cell in release.cells:
            assert (cell.ci_low, cell.ci_high) == (
                cell.value - release.half_width,
                cell.value + release.half_width,
            )


@pytest.mark.parametrize("name", ["laplace", "gaussian"])
def test_absent_keys_are_released_as_noise_around_zero(
    request: pytest.FixtureRequest, name: str
) -> None:
    draws: Draws = request.getfixturevalue(name)
    release = draws.releases[0]
    _, second, _ = _moments(release.mechanism, release.noise_scale)
    assert draws.absent.size == RUNS * 10 * 5
    assert (draws.absent < 0).any()  # never clamped at zero
    assert abs(draws.absent.mean()) <= Z * math.sqrt(second / draws.absent.size)

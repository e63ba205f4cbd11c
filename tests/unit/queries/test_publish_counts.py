"""Publish-time patient counts: noise from one OpenDP measurement, calibrated to the declared
spend from first principles (sensitivity 1 per count), with the exact interval of one draw."""

from __future__ import annotations

import math

import pytest

from dpgate_server.queries.accuracy import half_width
from dpgate_server.queries.model import Mechanism
from dpgate_server.queries.publish_counts import noisy_patient_counts
from dpgate_server.vocabulary.accounting import Accounting


@pytest.mark.parametrize("n", [1, 3, 7])
def test_pure_dp_counts_share_the_epsilon_with_laplace_scale_n_over_epsilon(n: int) -> None:
    released = noisy_patient_counts([100] * n, Accounting.PURE_DP, 50_000_000)
    assert released.mechanism is Mechanism.DISCRETE_LAPLACE
    assert released.noise_scale == pytest.approx(n / 0.05, rel=1e-9)
    assert released.noise_scale >= n / 0.05  # never less noise than the spend pays for
    assert released.cost_units <= 50_000_000
    assert len(released.values) == n
    assert released.half_width == half_width(Mechanism.DISCRETE_LAPLACE, released.noise_scale, 0.95)


@pytest.mark.parametrize("n", [1, 3, 7])
def test_zcdp_counts_share_the_rho_with_gaussian_sigma_sqrt_n_over_two_rho(n: int) -> None:
    released = noisy_patient_counts([100] * n, Accounting.ZCDP, 500_000, confidence_level=0.9)
    assert released.mechanism is Mechanism.DISCRETE_GAUSSIAN
    sigma = math.sqrt(n / (2 * 0.0005))
    assert released.noise_scale == pytest.approx(sigma, rel=1e-9)
    assert released.noise_scale >= sigma
    assert released.cost_units <= 500_000
    assert released.confidence_level == 0.9
    assert released.half_width == half_width(Mechanism.DISCRETE_GAUSSIAN, released.noise_scale, 0.9)


def test_counts_are_patients_so_never_negative_and_at_least_one() -> None:
    with pytest.raises(ValueError, match="at least one count"):
        noisy_patient_counts([], Accounting.PURE_DP, 1_000)
    with pytest.raises(ValueError, match="never negative"):
        noisy_patient_counts([3, -1], Accounting.PURE_DP, 1_000)

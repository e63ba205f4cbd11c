"""A rho in plain terms: the (epsilon, delta) it implies, checked against OpenDP's own map.

The client computes the conversion without OpenDP (it installs without it); here, where
OpenDP is installed, the two must agree, and the client's epsilon must never be below
what OpenDP says (a privacy loss is never understated).
"""

from __future__ import annotations

import math
from decimal import Decimal

import opendp.prelude as dp
import pytest

from dpgate_shared.privacy_loss import (
    DEFAULT_DELTA,
    epsilon_equivalent,
    in_plain_terms,
    shown_epsilon,
    textbook_epsilon,
    zcdp_delta,
    zcdp_epsilon,
)

dp.enable_features("contrib")

RHOS = (0.0001, 0.01, 0.125, 0.5, 1.0, 2.0, 45.0, 108.0, 288.0)
DELTAS = (1e-9, 1e-6, 1e-3)


def opendp_profile(rho: float) -> dp.PrivacyProfile:
    """OpenDP's privacy profile of a Gaussian mechanism that is exactly rho-zCDP."""
    sigma = math.sqrt(1.0 / (2.0 * rho))
    gaussian = dp.m.make_gaussian(
        dp.atom_domain(T=float, nan=False), dp.absolute_distance(T=float), sigma
    )
    return dp.c.make_zCDP_to_approxDP(gaussian).map(1.0)


@pytest.mark.parametrize("rho", RHOS)
@pytest.mark.parametrize("delta", DELTAS)
def test_epsilon_equals_opendps_conversion(rho: float, delta: float) -> None:
    profile = opendp_profile(rho)
    assert zcdp_epsilon(rho, delta) == pytest.approx(profile.epsilon(delta), rel=1e-9)


@pytest.mark.parametrize("rho", RHOS)
def test_epsilon_is_never_below_what_opendp_allows(rho: float) -> None:
    epsilon = zcdp_epsilon(rho, DEFAULT_DELTA)
    assert opendp_profile(rho).delta(epsilon) <= DEFAULT_DELTA
    assert zcdp_delta(rho, epsilon) <= DEFAULT_DELTA


@pytest.mark.parametrize("rho", RHOS)
@pytest.mark.parametrize("epsilon", [0.1, 1.0, 5.0, 50.0])
def test_delta_equals_opendps(rho: float, epsilon: float) -> None:
    assert zcdp_delta(rho, epsilon) == pytest.approx(
        opendp_profile(rho).delta(epsilon), rel=1e-9, abs=1e-300
    )


@pytest.mark.parametrize("rho", RHOS)
def test_tight_epsilon_is_within_the_textbook_bound(rho: float) -> None:
    tight = zcdp_epsilon(rho)
    assert rho < tight < textbook_epsilon(rho)


def test_known_value_at_rho_one_half() -> None:
    # The textbook bound, 0.5 + 2 sqrt(0.5 ln 1e6), is 5.7565; the tight one 5.2215.
    assert textbook_epsilon(0.5) == pytest.approx(5.756521769756932, rel=1e-12)
    assert zcdp_epsilon(0.5) == pytest.approx(5.22153444453017, rel=1e-9)


def test_epsilon_grows_with_rho_and_shrinks_with_delta() -> None:
    epsilons = [zcdp_epsilon(rho) for rho in RHOS]
    assert epsilons == sorted(epsilons)
    assert zcdp_epsilon(1.0, 1e-9) > zcdp_epsilon(1.0, 1e-6) > zcdp_epsilon(1.0, 1e-3)


def test_zero_rho_is_zero_epsilon() -> None:
    assert zcdp_epsilon(0.0) == 0.0
    assert zcdp_delta(0.0, 0.0) == 0.0


@pytest.mark.parametrize(("rho", "delta"), [(-0.1, 1e-6), (math.nan, 1e-6), (1.0, 0.0), (1.0, 1.0)])
def test_bad_input_is_refused(rho: float, delta: float) -> None:
    with pytest.raises(ValueError, match=r"rho|delta"):
        zcdp_epsilon(rho, delta)


def test_pure_dp_amounts_have_no_equivalent() -> None:
    assert epsilon_equivalent(Decimal("0.5"), "pure_dp") is None
    assert epsilon_equivalent(Decimal("0.5"), "zcdp") == pytest.approx(5.2215344445)


def test_plain_terms_give_rho_with_its_epsilon_and_delta() -> None:
    assert in_plain_terms(Decimal("0.5"), "zcdp") == "rho 0.5 (epsilon 5.23 at delta 0.000001)"
    assert in_plain_terms(Decimal("0.25"), "pure_dp") == "epsilon 0.25"


@pytest.mark.parametrize(
    ("epsilon", "shown"),
    [(5.221, "5.23"), (5.22, "5.22"), (0.012341, "0.0124"), (183.06, "184"), (1231.88, "1,232"),
     (0.0, "0"), (math.inf, "unbounded")],
)  # fmt: skip
def test_shown_epsilon_rounds_up_to_three_digits(epsilon: float, shown: str) -> None:
    assert shown_epsilon(epsilon) == shown

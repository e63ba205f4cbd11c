"""Exact amounts: one conversion and one display, shared by the client and the server."""

from __future__ import annotations

import subprocess
import sys
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dpgate_shared.units import (
    describe,
    plain,
    spend_to_units,
    to_decimal,
    to_units_ceil,
    to_units_exact,
    to_units_floor,
    units_to_decimal,
)

nine_place_decimals = st.decimals(
    min_value=Decimal("-9223372036.854775807"),
    max_value=Decimal("9223372036.854775807"),
    places=9,
    allow_nan=False,
    allow_infinity=False,
)
"""Every amount a Spend message can carry: at most 9 decimal places, within int64."""


@given(nine_place_decimals)
def test_any_nine_place_decimal_survives_units_exactly(amount: Decimal) -> None:
    assert units_to_decimal(to_units_exact(amount, "epsilon")) == amount
    assert units_to_decimal(spend_to_units(amount)) == amount


@given(nine_place_decimals)
def test_an_amount_reads_back_from_its_display(amount: Decimal) -> None:
    assert Decimal(plain(amount)) == amount
    assert "E" not in plain(amount)


@pytest.mark.parametrize(
    ("written", "exact"),
    [(0.1, "0.1"), (0.3, "0.3"), (1e-9, "0.000000001"), ("2.5", "2.5"), (5, "5")],
)
def test_a_float_means_the_decimal_it_prints_as(written: object, exact: str) -> None:
    assert to_decimal(written, "epsilon") == Decimal(exact)  # type: ignore[arg-type]
    assert str(to_decimal(0.1, "epsilon")) == "0.1"


@pytest.mark.parametrize("written", [float("nan"), float("inf"), "NaN", "-Infinity", "lots"])
def test_what_is_not_a_finite_number_is_refused(written: object) -> None:
    with pytest.raises(ValueError, match="epsilon"):
        to_decimal(written, "epsilon")  # type: ignore[arg-type]


@pytest.mark.parametrize("written", [True, None, [1]])
def test_what_is_not_a_number_is_a_type_error(written: object) -> None:
    with pytest.raises(TypeError, match="rho must be a number"):
        to_decimal(written, "rho")  # type: ignore[arg-type]


def test_an_exact_amount_finer_than_a_billionth_is_refused_in_plain_words() -> None:
    with pytest.raises(ValueError, match=r"epsilon 0\.0000000001 has more than 9") as caught:
        to_units_exact(Decimal("1E-10"), "epsilon")
    assert "unit" not in str(caught.value)


def test_a_query_spend_rounds_down_and_keeps_its_sign() -> None:
    assert spend_to_units(Decimal("0.3000000009")) == 300_000_000
    assert spend_to_units(Decimal("-0.5")) == -500_000_000


def test_costs_round_up_and_allowances_down_by_their_exact_value() -> None:
    assert to_units_ceil(Decimal(1) / 3) == 333_333_334
    assert to_units_floor(Decimal(1) / 3) == 333_333_333
    assert to_units_ceil(0.1) == 100_000_001  # the binary value of 0.1 is above 0.1
    with pytest.raises(ValueError, match="negative"):
        to_units_floor(-1)


@pytest.mark.parametrize(
    ("units", "accounting", "shown"),
    [
        (4_800_000_000, "pure_dp", "epsilon 4.8"),
        (250_000_000, "zcdp", "rho 0.25"),
        (250, "zcdp", "rho 0.00000025"),
        (10**10, "pure_dp", "epsilon 10"),
        (0, "pure_dp", "epsilon 0"),
        (1_500_000_000, "", "budget 1.5"),
    ],
)
def test_people_see_the_measure_and_a_decimal(units: int, accounting: str, shown: str) -> None:
    assert describe(units, accounting) == shown


def test_the_shared_rules_load_nothing_but_the_standard_library() -> None:
    code = (
        "import sys\n"
        "before = set(sys.modules)\n"
        "import dpgate_shared.units, dpgate_shared.confidence\n"
        "loaded = {m.split('.')[0] for m in set(sys.modules) - before}\n"
        "assert loaded - set(sys.stdlib_module_names) == {'dpgate_shared'}, loaded\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    "text", ["1E+28", "1E+308", "-9.99E+400", "123456789012345678901234567890"]
)
def test_plain_shows_an_enormous_amount_without_failing(text: str) -> None:
    shown = plain(Decimal(text))
    assert "E+" in shown
    assert abs(Decimal(shown) - Decimal(text)) <= abs(Decimal(text)) * Decimal("1E-6")


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (Decimal("0E-9"), "0"),
        (Decimal("-0.250000000"), "-0.25"),
        (Decimal("9223372036.854775807"), "9223372036.854775807"),
    ],
)
def test_every_amount_the_wire_can_carry_is_shown_exactly(value: Decimal, shown: str) -> None:
    assert plain(value) == shown

"""The client's query builder produces the wire query a planner means."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from dpgate import count, total
from dpgate_proto.v1 import query_pb2, types_pb2


def test_count_of_dna_by_practice_and_week() -> None:
    message = count("gp").where(status="DNA").by("practice_code", "week").epsilon(0.5).to_proto()
    assert message.aggregate.function == query_pb2.AGGREGATE_FUNCTION_COUNT
    assert list(message.group_by) == ["practice_code", "week"]
    [condition] = message.filters
    assert condition.column == "status"
    assert condition.operator == query_pb2.FILTER_OPERATOR_EQ
    assert condition.values[0].string_value == "DNA"
    assert message.amount.nano_units == 500_000_000


def test_sum_with_range_and_in_conditions() -> None:
    message = (
        total("gp", "duration_minutes")
        .where("lead_time_days", ">=", 8)
        .where_in("mode", ["Telephone", "Face-to-Face"])
        .where("appointment_date", "<", dt.date(2025, 3, 1))
        .accuracy(100.0)
        .to_proto()
    )
    assert message.aggregate.column == "duration_minutes"
    ops = [f.operator for f in message.filters]
    assert ops == [
        query_pb2.FILTER_OPERATOR_GE,
        query_pb2.FILTER_OPERATOR_IN,
        query_pb2.FILTER_OPERATOR_LT,
    ]
    assert [v.string_value for v in message.filters[1].values] == ["Telephone", "Face-to-Face"]
    assert message.filters[2].values[0].date_value == "2025-03-01"
    assert message.WhichOneof("spend") == "target_half_width"


def test_in_with_a_single_string_is_one_value_not_letters() -> None:
    message = count("gp").where("mode", "in", "Telephone").to_proto()
    assert [v.string_value for v in message.filters[0].values] == ["Telephone"]


def test_builder_is_immutable() -> None:
    base = count("gp")
    grouped = base.by("mode")
    assert base.group_by == ()
    assert grouped.group_by == ("mode",)


def test_unknown_operator_is_refused_before_sending() -> None:
    with pytest.raises(ValueError, match="unknown operator"):
        count("gp").where("hour", "~", 3)


def test_value_of_an_unsupported_type_is_refused() -> None:
    with pytest.raises(TypeError, match="str, int or date"):
        count("gp").where(hour=3.5)


@pytest.mark.parametrize(
    "written", [Decimal("0.1"), "0.1", 0.1, "0.100000000"], ids=["Decimal", "str", "float", "zeros"]
)
def test_a_spend_is_kept_as_the_exact_decimal_written(written: object) -> None:
    spec = count("gp").epsilon(written)  # type: ignore[arg-type]
    assert isinstance(spec.spend, Decimal)
    assert spec.spend == Decimal("0.1")
    assert spec.measure == "epsilon"


def test_a_whole_number_spend_is_accepted() -> None:
    spec = count("gp").rho(2)
    assert (spec.measure, spec.spend) == ("rho", Decimal(2))
    assert spec.to_proto().amount.accounting == types_pb2.ACCOUNTING_ZCDP


def test_a_decimal_finer_than_a_float_is_not_rounded_through_one() -> None:
    exact = Decimal("1.000000001")  # float(exact) would print 1.000000001 but is not it
    spec = count("gp").epsilon(exact)
    assert spec.spend is exact
    assert spec.to_proto().amount.nano_units == 1_000_000_001


def test_a_spend_beyond_nine_places_is_rounded_down_never_up() -> None:
    assert count("gp").epsilon(1 / 3).to_proto().amount.nano_units == 333_333_333


@pytest.mark.parametrize("written", ["0.0000000001", 1e-12])
def test_a_spend_below_the_smallest_amount_is_refused_in_plain_words(written: object) -> None:
    with pytest.raises(ValueError, match=r"below the smallest amount, 0\.000000001") as caught:
        count("gp").epsilon(written)  # type: ignore[arg-type]
    assert "unit" not in str(caught.value)


@pytest.mark.parametrize("written", ["half", float("nan"), float("inf")])
def test_a_spend_that_is_not_a_finite_number_is_refused(written: object) -> None:
    with pytest.raises(ValueError, match="epsilon must be a"):
        count("gp").epsilon(written)  # type: ignore[arg-type]


def test_accuracy_replaces_a_spend_and_a_spend_replaces_accuracy() -> None:
    by_accuracy = count("gp").epsilon(1).accuracy(50)
    assert (by_accuracy.spend, by_accuracy.target_half_width) == (None, 50.0)
    assert by_accuracy.to_proto().WhichOneof("spend") == "target_half_width"
    by_spend = by_accuracy.epsilon("0.5")
    assert (by_spend.spend, by_spend.target_half_width) == (Decimal("0.5"), None)
    assert by_spend.to_proto().WhichOneof("spend") == "amount"

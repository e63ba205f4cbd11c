"""The client's query builder produces the wire query a planner means."""

from __future__ import annotations

import datetime as dt

import pytest

from dpgate import count, total
from dpgate._proto.dpgate.v1 import query_pb2


def test_count_of_dna_by_practice_and_week() -> None:
    message = count("gp").where(status="DNA").by("practice_code", "week").epsilon(0.5).to_proto()
    assert message.aggregate.function == query_pb2.AGGREGATE_FUNCTION_COUNT
    assert list(message.group_by) == ["practice_code", "week"]
    [condition] = message.filters
    assert condition.column == "status"
    assert condition.operator == query_pb2.FILTER_OPERATOR_EQ
    assert condition.values[0].string_value == "DNA"
    assert message.epsilon == 0.5


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

"""A query's spend crosses the wire exactly, and the old double fields are still read.

The path is the real one without a network: the client's builder makes the message, it
is serialised and parsed, the server converts and validates it into ledger units, and
the amount goes back out in a `Spend` that the client reads as a Decimal.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dpgate import count
from dpgate._convert import spend as spend_from_wire
from dpgate_proto.v1 import query_pb2, types_pb2
from dpgate_server import api
from dpgate_server.api.convert import query_from_proto, spend_to_proto
from dpgate_server.api.errors import BadRequestError
from dpgate_server.queries.errors import InvalidQuery
from dpgate_server.queries.limits import QueryLimits
from dpgate_server.queries.validation import validate
from dpgate_server.store.metadata import ColumnKind, ColumnSpec, DatasetMetadata, Visibility
from dpgate_server.vocabulary.accounting import Accounting
from dpgate_server.vocabulary.errors import ErrorReason

WIDE_LIMITS = QueryLimits(max_epsilon=Decimal(10**9), max_rho=Decimal(10**9))
spends = st.decimals(
    min_value=Decimal("0.000000001"),
    max_value=Decimal(10**9),
    places=9,
    allow_nan=False,
    allow_infinity=False,
)
"""Every spend the wire and the ledger can hold: at most 9 decimal places."""


def _metadata(accounting: Accounting) -> DatasetMetadata:
    return DatasetMetadata(
        dataset_id="gp",
        title="t",
        description="d",
        privacy_unit="patient_key",
        max_contributions=4,
        accounting=accounting,
        max_rows=1_000,
        period_start=dt.date(2025, 1, 1),
        period_end=dt.date(2025, 1, 31),
        columns=(
            ColumnSpec("patient_key", ColumnKind.INTEGER, Visibility.PRIVATE, "patient"),
            ColumnSpec(
                "mode",
                ColumnKind.STRING,
                Visibility.PUBLIC,
                "mode",
                groupable=True,
                filterable=True,
                values=("Telephone", "Video"),
            ),
        ),
    )


def _server_units(message: query_pb2.Query, accounting: Accounting) -> int:
    """What the server charges the ledger for `message`, after a trip through bytes."""
    parsed = query_pb2.Query.FromString(message.SerializeToString())
    validated = validate(_metadata(accounting), query_from_proto(parsed), WIDE_LIMITS)
    assert validated.spend_units is not None
    return validated.spend_units


@given(spends)
def test_any_nine_place_spend_survives_client_wire_ledger_wire_client(amount: Decimal) -> None:
    spec = count("gp").by("mode").epsilon(amount)
    assert spec.spend == amount
    units = _server_units(spec.to_proto(), Accounting.PURE_DP)
    back = types_pb2.Spend.FromString(spend_to_proto(Accounting.PURE_DP, units).SerializeToString())
    assert back.accounting == types_pb2.ACCOUNTING_PURE_DP
    assert spend_from_wire(back) == amount


@given(spends)
def test_rho_survives_the_same_way(amount: Decimal) -> None:
    units = _server_units(count("gp").rho(str(amount)).to_proto(), Accounting.ZCDP)
    assert spend_from_wire(spend_to_proto(Accounting.ZCDP, units)) == amount


def test_the_spend_travels_as_an_exact_amount_not_a_double() -> None:
    message = count("gp").epsilon(0.1).to_proto()
    assert message.WhichOneof("spend") == "amount"
    assert (message.amount.accounting, message.amount.nano_units) == (
        types_pb2.ACCOUNTING_PURE_DP,
        100_000_000,
    )
    rho = count("gp").rho("0.25").to_proto()
    assert (rho.amount.accounting, rho.amount.nano_units) == (
        types_pb2.ACCOUNTING_ZCDP,
        250_000_000,
    )


@pytest.mark.parametrize(
    ("old_field", "value", "accounting", "units"),
    [
        ("epsilon", 0.1, Accounting.PURE_DP, 100_000_000),
        ("epsilon", 0.3, Accounting.PURE_DP, 300_000_000),
        ("epsilon", 2.0, Accounting.PURE_DP, 2_000_000_000),
        ("rho", 0.05, Accounting.ZCDP, 50_000_000),
    ],
)
def test_the_deprecated_double_fields_are_still_read(
    old_field: str, value: float, accounting: Accounting, units: int
) -> None:
    message = query_pb2.Query(dataset_id="gp", group_by=["mode"])
    message.aggregate.function = query_pb2.AGGREGATE_FUNCTION_COUNT
    setattr(message, old_field, value)
    assert message.WhichOneof("spend") == old_field
    assert _server_units(message, accounting) == units


def test_a_new_amount_replaces_an_old_double_in_the_same_message() -> None:
    message = count("gp").epsilon("0.7").to_proto()
    message.epsilon = 0.2
    message.amount.CopyFrom(types_pb2.Spend(accounting=types_pb2.ACCOUNTING_PURE_DP, nano_units=5))
    assert message.WhichOneof("spend") == "amount"
    assert _server_units(message, Accounting.PURE_DP) == 5


def test_an_amount_without_its_accounting_is_refused_naming_the_field() -> None:
    message = count("gp").to_proto()
    message.amount.nano_units = 500_000_000
    with pytest.raises(BadRequestError) as caught:
        query_from_proto(message)
    assert (caught.value.reason, caught.value.field) == ("BAD_SPEND", "amount.accounting")


def test_rho_on_a_pure_dp_dataset_is_the_wrong_accounting() -> None:
    with pytest.raises(InvalidQuery) as caught:
        _server_units(count("gp").rho("0.5").to_proto(), Accounting.PURE_DP)
    assert caught.value.reason is ErrorReason.WRONG_ACCOUNTING


@pytest.mark.parametrize(("units", "shown"), [(0, "0"), (-250_000_000, "-0.25")])
def test_a_spend_not_above_zero_is_refused_in_epsilon(units: int, shown: str) -> None:
    message = count("gp").to_proto()
    message.amount.CopyFrom(
        types_pb2.Spend(accounting=types_pb2.ACCOUNTING_PURE_DP, nano_units=units)
    )
    with pytest.raises(InvalidQuery) as caught:
        _server_units(message, Accounting.PURE_DP)
    assert caught.value.reason is ErrorReason.BAD_EPSILON
    assert f"got {shown};" in caught.value.message
    assert "unit" not in caught.value.message


@pytest.mark.parametrize(
    ("accounting", "expected"),
    [
        (Accounting.PURE_DP, types_pb2.ACCOUNTING_PURE_DP),
        ("zcdp", types_pb2.ACCOUNTING_ZCDP),
        (None, types_pb2.ACCOUNTING_UNSPECIFIED),
    ],
)
def test_every_amount_leaves_through_one_conversion(
    accounting: Accounting | str | None, expected: int
) -> None:
    assert spend_to_proto(accounting, 7) == types_pb2.Spend(accounting=expected, nano_units=7)
    defined = [
        path.name
        for path in Path(api.__file__).parent.glob("*.py")
        if "def spend_to_proto(" in path.read_text(encoding="utf-8")
    ]
    assert defined == ["convert.py"]


def test_an_old_clients_absurd_double_is_refused_as_bad_epsilon_not_a_crash() -> None:
    message = query_pb2.Query(dataset_id="gp", epsilon=1e308)
    message.aggregate.function = query_pb2.AGGREGATE_FUNCTION_COUNT
    with pytest.raises(InvalidQuery) as caught:
        validate(_metadata(Accounting.PURE_DP), query_from_proto(message), QueryLimits())
    assert caught.value.reason is ErrorReason.BAD_EPSILON
    assert "epsilon 1.000000E+308 is above the per-query maximum 10" in caught.value.message


def test_the_client_refuses_a_spend_too_large_for_the_wire() -> None:
    with pytest.raises(ValueError, match=r"epsilon 1\.000000E\+308 is too large to send"):
        count("gp").epsilon(1e308)

"""The admin and audit clients' pure helpers: exact amounts, times, roles, frames."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import polars as pl
import pytest
from rich.console import Console

from dpgate._admin_convert import (
    dataset_budget,
    spend_message,
    spending_frame,
    time_text,
    to_nano_units,
)
from dpgate._admin_types import IssuedToken
from dpgate._audit import AuditClient
from dpgate.cli.admin import _print_dataset_budget
from dpgate_proto.v1 import admin_pb2, types_pb2


@pytest.mark.parametrize(
    ("amount", "units"),
    [
        (0.3, 300_000_000),
        (0.1, 100_000_000),
        (Decimal("0.000000001"), 1),
        ("2.5", 2_500_000_000),
        (5, 5_000_000_000),
        (1e-9, 1),
        (-1, -1_000_000_000),
    ],
)
def test_amounts_convert_to_nano_units_exactly(amount: object, units: int) -> None:
    assert to_nano_units(amount, "epsilon") == units  # type: ignore[arg-type]


@pytest.mark.parametrize("amount", [Decimal("0.0000000001"), 1e-10, "0.1234567891"])
def test_amount_finer_than_a_nano_unit_is_refused(amount: object) -> None:
    with pytest.raises(ValueError, match="9 decimal places"):
        to_nano_units(amount, "epsilon")  # type: ignore[arg-type]


@pytest.mark.parametrize("amount", [float("nan"), float("inf"), "NaN", "lots"])
def test_non_finite_amount_is_refused(amount: object) -> None:
    with pytest.raises(ValueError, match="epsilon"):
        to_nano_units(amount, "epsilon")  # type: ignore[arg-type]


@pytest.mark.parametrize("amount", [True, None, [1]])
def test_non_number_amount_is_a_type_error(amount: object) -> None:
    with pytest.raises(TypeError):
        to_nano_units(amount, "epsilon")  # type: ignore[arg-type]


def test_epsilon_travels_as_pure_dp() -> None:
    message = spend_message(epsilon=0.5, rho=None)
    assert (message.accounting, message.nano_units) == (types_pb2.ACCOUNTING_PURE_DP, 500_000_000)


def test_rho_travels_as_zcdp() -> None:
    assert spend_message(epsilon=None, rho=1).accounting == types_pb2.ACCOUNTING_ZCDP


@pytest.mark.parametrize(("epsilon", "rho"), [(None, None), (1, 1)])
def test_exactly_one_of_epsilon_or_rho(epsilon: object, rho: object) -> None:
    with pytest.raises(ValueError, match="exactly one"):
        spend_message(epsilon, rho)  # type: ignore[arg-type]


def test_times_are_sent_in_utc() -> None:
    moment = dt.datetime(2026, 1, 31, 1, 30, tzinfo=dt.timezone(dt.timedelta(hours=1)))
    assert time_text(moment, "expires_at") == "2026-01-31T00:30:00Z"


def test_no_time_is_the_empty_string() -> None:
    assert time_text(None, "expires_at") == ""


def test_naive_time_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        time_text(dt.datetime(2026, 1, 31), "expires_at")


def test_issued_token_repr_hides_the_secret() -> None:
    issued = IssuedToken(token_id="tok_1", token="dpg_secret")
    assert "dpg_secret" not in repr(issued)
    assert "tok_1" in repr(issued)


def test_client_repr_hides_the_token() -> None:
    with AuditClient("127.0.0.1:1", "dpg_secret") as client:
        assert "dpg_secret" not in repr(client)


def test_spending_frame_has_exact_decimals() -> None:
    row = admin_pb2.SpendingRow(
        requester_id="r",
        organisation="o",
        dataset_id="d",
        allocated=types_pb2.Spend(accounting=types_pb2.ACCOUNTING_PURE_DP, nano_units=1),
        spent=types_pb2.Spend(accounting=types_pb2.ACCOUNTING_PURE_DP, nano_units=0),
        release_count=3,
        purpose="planning",
        agreement_reference="DSA-1",
        remaining=types_pb2.Spend(accounting=types_pb2.ACCOUNTING_PURE_DP, nano_units=1),
        expires_at="2031-01-01T00:00:00.000000Z",
    )
    frame = spending_frame([row])
    assert frame.to_dicts() == [
        {
            "requester_id": "r",
            "organisation": "o",
            "dataset_id": "d",
            "accounting": "pure_dp",
            "allocated": Decimal("0.000000001"),
            "spent": Decimal(0),
            "release_count": 3,
            "purpose": "planning",
            "agreement": "DSA-1",
            "remaining": Decimal("0.000000001"),
            "expires_at": dt.datetime(2031, 1, 1, tzinfo=dt.UTC),
            "last_spend_at": None,
        }
    ]


def test_empty_spending_report_keeps_its_columns() -> None:
    frame = spending_frame([])
    assert frame.height == 0
    assert frame.schema["spent"] == pl.Decimal(38, 9)


def test_dataset_budget_shows_what_publishing_spent_from_the_cap() -> None:
    """The administrator's budget view shows the publish spends inside `spent`, and calls
    the dataset over-subscribed when the allocations exceed what the cap leaves after them."""
    message = admin_pb2.GetDatasetBudgetResponse(
        dataset=types_pb2.DatasetSummary(dataset_id="gp_appointments", version="v000002"),
        cap=types_pb2.Spend(accounting=types_pb2.ACCOUNTING_PURE_DP, nano_units=2_000_000_000),
        spent=types_pb2.Spend(accounting=types_pb2.ACCOUNTING_PURE_DP, nano_units=150_000_000),
        allocated=types_pb2.Spend(accounting=types_pb2.ACCOUNTING_PURE_DP, nano_units=2 * 10**9),
        publish_spent=types_pb2.Spend(
            accounting=types_pb2.ACCOUNTING_PURE_DP, nano_units=50_000_000
        ),
        allocation_count=2,
        release_count=3,
    )
    budget = dataset_budget(message)
    assert (budget.publish_spent, budget.spent, budget.allocated) == (
        Decimal("0.05"),
        Decimal("0.15"),
        Decimal(2),
    )
    console = Console(record=True, width=200)
    _print_dataset_budget(console, budget)
    text = console.export_text()
    assert "of which 0.05 by publishing" in text
    assert "over-subscribed" in text  # 2 allocated + 0.05 published > a cap of 2

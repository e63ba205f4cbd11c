"""Pure pieces of the CLI (no server): --where parsing, amounts, exit codes, release text."""

from __future__ import annotations

from decimal import Decimal

import pytest
import typer

from dpgate.cli._errors import ExitCode, exit_code_for
from dpgate.cli._output import amount, jsonable
from dpgate.cli._query_options import Where, parse_where
from dpgate.cli.analyst import summarise_canonical
from dpgate.errors import (
    AlreadyExistsError,
    AuthenticationError,
    BudgetExhaustedError,
    DeadlineExceededError,
    DpgateError,
    InvalidQueryError,
    InvalidRequestError,
    NotFoundError,
    NotImplementedYetError,
    OverloadedError,
    PermissionDeniedError,
    PreconditionFailedError,
    ServerError,
    ServerUnavailableError,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("status=DNA", Where("status", "=", ("DNA",))),
        ("status==DNA", Where("status", "=", ("DNA",))),
        ("mode!=Unknown", Where("mode", "!=", ("Unknown",))),
        ("lead_time_days>=8", Where("lead_time_days", ">=", ("8",))),
        ("hour<8", Where("hour", "<", ("8",))),
        ("hour > 17", Where("hour", ">", ("17",))),
        (
            "national_category=Clinical Triage",
            Where("national_category", "=", ("Clinical Triage",)),
        ),
        ("mode:in:Telephone, Home Visit", Where("mode", "in", ("Telephone", "Home Visit"))),
    ],
)
def test_where_forms_parse(text: str, expected: Where) -> None:
    assert parse_where(text) == expected


@pytest.mark.parametrize("text", ["status", "=DNA", "status~DNA", "status=", "mode:in:a,,b"])
def test_malformed_where_is_refused(text: str) -> None:
    with pytest.raises(typer.BadParameter):
        parse_where(text)


@pytest.mark.parametrize(
    ("value", "shown"),
    [(Decimal("0.500000000"), "0.5"), (Decimal("10.000000000"), "10"), (Decimal("0"), "0"),
     (Decimal("0.000000001"), "0.000000001"), (Decimal("1E+2"), "100")],
)  # fmt: skip
def test_amounts_show_exactly_without_trailing_zeros(value: Decimal, shown: str) -> None:
    assert amount(value) == shown


def test_json_keeps_amounts_exact_as_strings_without_exponents() -> None:
    assert jsonable({"spent": Decimal("0.100000000"), "tiny": Decimal("2.5E-7"), "n": (1, 2)}) == {
        "spent": "0.1",
        "tiny": "0.00000025",
        "n": [1, 2],
    }


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (InvalidQueryError("x"), ExitCode.BAD_INPUT),
        (InvalidRequestError("x"), ExitCode.BAD_INPUT),
        (BudgetExhaustedError("x"), ExitCode.BUDGET_EXHAUSTED),
        (AuthenticationError("x"), ExitCode.AUTH),
        (PermissionDeniedError("x"), ExitCode.AUTH),
        (NotFoundError("x"), ExitCode.NOT_FOUND),
        (OverloadedError("x"), ExitCode.UNAVAILABLE),
        (ServerUnavailableError("x", code="UNAVAILABLE"), ExitCode.UNAVAILABLE),
        (DeadlineExceededError("x", code="DEADLINE_EXCEEDED"), ExitCode.UNAVAILABLE),
        (PreconditionFailedError("x"), ExitCode.CONFLICT),
        (AlreadyExistsError("x"), ExitCode.CONFLICT),
        (NotImplementedYetError("x"), ExitCode.OTHER),
        (ServerError("x", code="INTERNAL"), ExitCode.OTHER),
    ],
)
def test_each_error_has_its_exit_code(error: DpgateError, code: ExitCode) -> None:
    assert exit_code_for(error) == code


def test_release_query_is_summarised_in_words() -> None:
    canonical = (
        '{"aggregate":"SUM","column":"duration_minutes","filters":[{"column":"appointment_date",'
        '"op":"<","values":[{"date":"2025-06-01"}]}],"group_by":["mode","week"]}'
    )
    assert summarise_canonical(canonical) == (
        "SUM(duration_minutes) where appointment_date < (2025-06-01) by mode, week"
    )


def test_unrecognised_release_query_is_shown_as_is() -> None:
    assert summarise_canonical("not json") == "not json"

"""Validation and minimisation of one raw extract (in memory, no store)."""

from __future__ import annotations

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dpgate_server.governance.errors import GovernanceError
from dpgate_server.governance.ingest import STAGED_COLUMNS, IngestPolicy, minimise_extract
from dpgate_server.store.pseudonym import patient_key
from dpgate_server.synthetic.gp_metadata import gp_appointments_metadata
from dpgate_server.synthetic.population import select_practices
from dpgate_server.synthetic.raw_extracts import EXTRA_COLUMN
from dpgate_server.vocabulary.nhs_number import is_valid_nhs_number
from tests.unit.governance.helpers import (
    PRACTICES,
    SMALL,
    World,
    csv_bytes,
    good_row,
    valid_numbers,
    with_bad_check_digit,
)

KEY = bytes(range(32))
POLICY = IngestPolicy.of(gp_appointments_metadata(select_practices(PRACTICES)), SMALL)


def refusal(data: bytes) -> GovernanceError:
    with pytest.raises(GovernanceError) as caught:
        minimise_extract(data, POLICY, KEY)
    assert caught.value.reason == "EXTRACT_REJECTED"
    return caught.value


def one_row(**changes: str) -> pl.DataFrame:
    return minimise_extract(csv_bytes([good_row(**changes)]), POLICY, KEY).rows


# accepted extracts


def test_generated_extract_is_accepted_whole(governance_world: World) -> None:
    raw = governance_world.extract(SMALL)
    rows = minimise_extract(raw, POLICY, KEY).rows
    assert rows.height == raw.count(b"\n") - 1
    assert rows.schema == pl.Schema(STAGED_COLUMNS)
    assert (
        rows.null_count()
        .select(pl.all().exclude("duration_minutes", "lead_time_days"))
        .sum_horizontal()
        .item()
        == 0
    )


def test_identifying_and_undeclared_columns_are_dropped(governance_world: World) -> None:
    rows = minimise_extract(governance_world.extract(SMALL), POLICY, KEY).rows
    for name in ("nhs_number", "date_of_birth", "postcode", EXTRA_COLUMN, "booked_datetime"):
        assert name not in rows.columns


def test_nhs_number_becomes_the_keyed_pseudonym() -> None:
    number = valid_numbers(1, start=500)[0]
    assert one_row(nhs_number=number)["patient_key"].item() == patient_key(KEY, number)


def test_spaces_in_an_nhs_number_are_ignored() -> None:
    number = valid_numbers(1, start=7)[0]
    spaced = f"{number[:3]} {number[3:6]} {number[6:]}"
    assert one_row(nhs_number=spaced)["patient_key"].item() == patient_key(KEY, number)


@pytest.mark.parametrize(
    ("birth", "appointment", "band"),
    [
        ("2020-06-15", "2025-06-14 10:00", "0-4"),  # the day before the fifth birthday
        ("2020-06-15", "2025-06-15 10:00", "5-14"),  # on the birthday
        ("1940-01-01", "2025-01-01 10:00", "85+"),
        ("2025-01-01", "2025-01-01 10:00", "0-4"),  # born that day
    ],
)
def test_age_band_is_the_age_at_the_appointment(birth: str, appointment: str, band: str) -> None:
    row = one_row(date_of_birth=birth, appointment_datetime=appointment, booked_datetime="")
    assert row["age_band"].item() == band


def test_calendar_columns_come_from_the_appointment_time() -> None:
    row = one_row(appointment_datetime="2024-12-30 17:45", booked_datetime="2024-12-02 08:00")
    assert row.select("week", "month", "weekday", "hour").row(0) == (
        "2025-W01",
        "2024-12",
        "Mon",
        17,
    )
    assert row.select("lead_time_days", "lead_time_band").row(0) == (28, "22 to 28 Days")


@pytest.mark.parametrize(
    ("booked", "days", "band"),
    [
        ("2025-03-04 08:00", 0, "Same Day"),
        ("2024-11-01 08:00", 123, "More than 28 Days"),
        ("", None, "Unknown / Data Quality"),
    ],
)
def test_lead_time_band(booked: str, days: int | None, band: str) -> None:
    row = one_row(booked_datetime=booked)
    assert row.select("lead_time_days", "lead_time_band").row(0) == (days, band)


@pytest.mark.parametrize(
    ("minutes", "value", "band"),
    [
        ("5", 5, "1-5 Minutes"),
        ("60", 60, "31-60 Minutes"),
        ("61", 61, "Unknown / Data Quality"),  # AGP's data-quality band; SUM clamps to 60
        ("", None, "Unknown / Data Quality"),
    ],
)
def test_duration_band(minutes: str, value: int | None, band: str) -> None:
    row = one_row(duration_minutes=minutes)
    assert row.select("duration_minutes", "duration_band").row(0) == (value, band)


@settings(deadline=None)  # a whole extract per example: slow on a loaded machine, not wrong
@given(st.text(alphabet="0123456789", min_size=10, max_size=10))
def test_check_digit_agrees_with_the_pseudonym_module(number: str) -> None:
    data = csv_bytes([good_row(nhs_number=number)])
    try:
        minimise_extract(data, POLICY, KEY)
        accepted = True
    except GovernanceError:
        accepted = False
    assert accepted == is_valid_nhs_number(number)


# refused extracts


def test_missing_column_is_named() -> None:
    row = good_row()
    columns = [c for c in row if c != "national_category"]
    error = refusal(csv_bytes([row], columns))
    assert "line 1, column national_category: required column is missing" in error.message


def test_wrong_type_names_line_and_column() -> None:
    error = refusal(csv_bytes([good_row(), good_row(duration_minutes="ten")]))
    assert "line 3, column duration_minutes: not a whole number of minutes" in error.message


def test_bad_check_digit_names_line_and_column_without_the_number() -> None:
    number = with_bad_check_digit(valid_numbers(1)[0])
    error = refusal(csv_bytes([good_row(nhs_number=number)]))
    assert "line 2, column nhs_number: the check digit does not match" in error.message
    assert number not in error.message


def test_unknown_category_lists_the_allowed_labels() -> None:
    error = refusal(csv_bytes([good_row(mode="Phone")]))
    assert "line 2, column mode: not one of the dataset's labels: Face-to-Face" in error.message


def test_out_of_period_date_is_refused() -> None:
    error = refusal(csv_bytes([good_row(appointment_datetime="2026-01-03 10:00")]))
    assert "outside the dataset's period 2024-12-01 to 2025-11-30" in error.message


def test_row_of_another_practice_is_refused() -> None:
    error = refusal(csv_bytes([good_row(practice_code="F81146")]))
    assert "line 2, column practice_code: not the practice being uploaded (F81144)" in error.message


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"booked_datetime": "2025-03-05 09:00"}, "after the appointment"),
        ({"date_of_birth": "2025-04-01"}, "column date_of_birth: after the appointment"),
        ({"date_of_birth": "17/05/1980"}, "not a date in the form YYYY-MM-DD"),
        ({"duration_minutes": "0"}, "column duration_minutes: not a possible duration"),
        ({"duration_minutes": "1441"}, "not a possible duration (1 to 1440 minutes)"),
        ({"sex": "F"}, "line 2, column sex: not one of the dataset's labels: Female, Male"),
        ({"status": ""}, "column status: a value is required"),
        ({"appointment_datetime": "04/03/2025 09:30"}, "not a date and time"),
    ],
)
def test_impossible_values_are_refused(changes: dict[str, str], expected: str) -> None:
    assert expected in refusal(csv_bytes([good_row(**changes)])).message


def test_empty_extract_is_refused() -> None:
    assert "the extract is empty" in refusal(b"").message


def test_header_without_rows_is_refused() -> None:
    assert (
        "a header but no rows"
        in refusal(csv_bytes([good_row()])[: len(",".join(good_row())) + 1]).message
    )


def test_extract_cut_mid_row_is_refused(governance_world: World) -> None:
    raw = governance_world.extract(SMALL)
    cut = raw[: raw.rindex(b"\n", 0, len(raw) - 1) + 25]  # the last row loses most fields
    error = refusal(cut)
    last_line = cut.count(b"\n") + 1
    assert f"line {last_line}" in error.message


def test_corrupt_bytes_are_refused_as_not_utf8(governance_world: World) -> None:
    raw = bytearray(governance_world.extract(SMALL))
    raw[5000:5004] = b"\xff\xfe\x00\x81"
    error = refusal(bytes(raw))
    assert "not UTF-8 text" in error.message


def test_row_with_more_fields_than_the_header_is_refused() -> None:
    data = csv_bytes([good_row()]) + b"x," * 20 + b"x\n"
    assert "not a well-formed CSV file" in refusal(data).message


def test_refusal_lists_each_distinct_problem_once_one_a_line() -> None:
    rows = [good_row(mode="Phone", status="Gone") for _ in range(30)]
    rows[4] = good_row(duration_minutes="0")
    error = refusal(csv_bytes(rows))
    assert error.metadata == {"problem_count": "3"}
    assert error.message.splitlines() == [
        "the extract was refused, nothing was staged (3 problems; each is listed once):",
        "lines 2, 3, 4 and 26 more, column mode: not one of the dataset's labels: "
        + ", ".join(POLICY.labels["mode"]),
        "lines 2, 3, 4 and 26 more, column status: not one of the dataset's labels: "
        + ", ".join(POLICY.labels["status"]),
        "line 6, column duration_minutes: not a possible duration (1 to 1440 minutes)",
    ]


def test_refusal_never_quotes_a_value_of_the_extract() -> None:
    rows = [
        good_row(mode="Phone", practice_code="Z99999", duration_minutes="12.5"),
        good_row(appointment_datetime="04/03/2025 09:30", booked_datetime="yesterday"),
    ]
    message = refusal(csv_bytes(rows)).message
    for value in ("Phone", "Z99999", "12.5", "04/03/2025", "yesterday"):
        assert value not in message
    assert "line 2, column practice_code: not the practice being uploaded" in message


def test_a_listing_too_long_for_one_message_counts_the_rest() -> None:
    columns = ("mode", "status", "hcp_type", "national_category", "service_setting", "sex")
    rows = [good_row(**dict.fromkeys(columns, "?"), duration_minutes="x")]
    message = refusal(csv_bytes(rows)).message
    assert len(message.encode()) <= 1024  # the API's bound: nothing is cut mid-line
    assert message.splitlines()[-1].startswith("and ")
    assert message.splitlines()[-1].endswith("fix these, then upload again to see them")


def test_messages_never_quote_identifying_values() -> None:
    number = with_bad_check_digit(valid_numbers(1)[0])
    error = refusal(
        csv_bytes([good_row(nhs_number=number, date_of_birth="1980-13-45", postcode="ZZ1 1ZZ")])
    )
    assert number not in error.message
    assert "1980-13-45" not in error.message
    assert "ZZ1 1ZZ" not in error.message

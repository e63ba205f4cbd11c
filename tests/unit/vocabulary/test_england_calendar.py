"""The window's calendar: bank holidays, working days and ISO weeks as AGP counts them."""

from __future__ import annotations

import datetime as dt

from dpgate_server.vocabulary.england_calendar import iso_week_label, window_calendar

# Working days per month in AGP Table 1a, Dec 2024 .. Nov 2025 (AGP_REFERENCE.md section 1).
AGP_WORKING_DAYS = [20, 22, 20, 21, 20, 20, 21, 23, 20, 22, 23, 20]


def test_window_is_december_2024_to_november_2025() -> None:
    calendar = window_calendar()
    assert calendar.dates[0] == dt.date(2024, 12, 1)
    assert calendar.dates[-1] == dt.date(2025, 11, 30)
    assert calendar.days == 365


def test_working_days_match_agp_table() -> None:
    assert window_calendar().working_days_per_month().tolist() == AGP_WORKING_DAYS


def test_bank_holidays_fall_where_agp_implies() -> None:
    calendar = window_calendar()
    months = [calendar.months[i] for i in calendar.month_index[calendar.is_bank_holiday]]
    assert sorted(set(months)) == ["2024-12", "2025-01", "2025-04", "2025-05", "2025-08"]
    assert [months.count(m) for m in sorted(set(months))] == [2, 1, 2, 2, 1]


def test_iso_week_crosses_the_year_boundary() -> None:
    assert iso_week_label(dt.date(2024, 12, 30)) == "2025-W01"
    assert iso_week_label(dt.date(2024, 12, 1)) == "2024-W48"
    assert iso_week_label(dt.date(2025, 1, 15)) == "2025-W03"


def test_public_calendar_has_one_row_per_day() -> None:
    table = window_calendar().public_table()
    assert table.height == 365
    assert table.columns == ["appointment_date", "week", "month", "weekday", "is_working_day"]
    assert table["is_working_day"].sum() == sum(AGP_WORKING_DAYS)

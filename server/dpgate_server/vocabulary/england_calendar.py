"""The data window's calendar: December 2024 to November 2025 in England.

Appointment volume follows the working week, so the generator needs England's real bank
holidays in the window (8 weekdays, as the AGP working-day counts imply: Dec 2, Jan 1, Apr 2,
May 2, Aug 1) and the labels the public `calendar` table carries (ISO week, month, weekday).
Everything here is public and fixed: it never depends on a seed or on generated rows.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from functools import cache

import numpy as np
import numpy.typing as npt
import polars as pl

WINDOW_START = dt.date(2024, 12, 1)
"""First day of the data window (inclusive)."""
WINDOW_END = dt.date(2025, 11, 30)
"""Last day of the data window (inclusive)."""

ENGLAND_BANK_HOLIDAYS: tuple[dt.date, ...] = (
    dt.date(2024, 12, 25),  # Christmas Day
    dt.date(2024, 12, 26),  # Boxing Day
    dt.date(2025, 1, 1),  # New Year's Day
    dt.date(2025, 4, 18),  # Good Friday
    dt.date(2025, 4, 21),  # Easter Monday
    dt.date(2025, 5, 5),  # Early May bank holiday
    dt.date(2025, 5, 26),  # Spring bank holiday
    dt.date(2025, 8, 25),  # Summer bank holiday
)
"""England's bank holidays inside the window (gov.uk); all fall on weekdays."""

WEEKDAY_LABELS: tuple[str, ...] = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


@dataclass(frozen=True, slots=True)
class Calendar:
    """Every day of the window with the attributes the model and the public table need.

    Arrays are indexed by day number (0 = WINDOW_START) and must not be modified.

    Attributes:
        dates: the days, in order.
        weekday: 0 = Monday .. 6 = Sunday.
        month_index: 0 = December 2024 .. 11 = November 2025.
        is_bank_holiday: the day is an England bank holiday.
        is_working_day: a weekday that is not a bank holiday.
        months: month labels "YYYY-MM", in order.
        weeks: ISO week label ("2025-W03") of each day.
    """

    dates: tuple[dt.date, ...]
    weekday: npt.NDArray[np.int8]
    month_index: npt.NDArray[np.int8]
    is_bank_holiday: npt.NDArray[np.bool_]
    is_working_day: npt.NDArray[np.bool_]
    months: tuple[str, ...]
    weeks: tuple[str, ...]

    @property
    def days(self) -> int:
        return len(self.dates)

    def week_labels(self) -> tuple[str, ...]:
        """The distinct ISO weeks touched by the window, in order."""
        return tuple(dict.fromkeys(self.weeks))

    def working_days_per_month(self) -> npt.NDArray[np.int64]:
        """Working days in each month, as AGP counts them (weekdays minus bank holidays)."""
        return np.bincount(
            self.month_index[self.is_working_day].astype(np.int64), minlength=len(self.months)
        )

    def epoch_days(self) -> npt.NDArray[np.int32]:
        """Days since 1970-01-01 of each day (the Parquet/Arrow date32 representation)."""
        start = (WINDOW_START - dt.date(1970, 1, 1)).days
        return np.arange(start, start + self.days, dtype=np.int32)

    def public_table(self) -> pl.DataFrame:
        """The public `calendar` table: one row per day of the window."""
        return pl.DataFrame(
            {
                "appointment_date": list(self.dates),
                "week": list(self.weeks),
                "month": [self.months[i] for i in self.month_index],
                "weekday": [WEEKDAY_LABELS[i] for i in self.weekday],
                "is_working_day": self.is_working_day.tolist(),
            },
            schema={
                "appointment_date": pl.Date,
                "week": pl.String,
                "month": pl.String,
                "weekday": pl.String,
                "is_working_day": pl.Boolean,
            },
        )


def iso_week_label(day: dt.date) -> str:
    """ISO 8601 week of `day` as "YYYY-Www" (30 Dec 2024 is in "2025-W01")."""
    year, week, _ = day.isocalendar()
    return f"{year}-W{week:02d}"


@cache
def window_calendar() -> Calendar:
    """The calendar of the data window (built once; it is immutable)."""
    count = (WINDOW_END - WINDOW_START).days + 1
    dates = tuple(WINDOW_START + dt.timedelta(days=i) for i in range(count))
    months = tuple(dict.fromkeys(f"{d.year:04d}-{d.month:02d}" for d in dates))
    month_of = {label: i for i, label in enumerate(months)}
    weekday = np.array([d.weekday() for d in dates], dtype=np.int8)
    holidays = set(ENGLAND_BANK_HOLIDAYS)
    is_bank_holiday = np.array([d in holidays for d in dates], dtype=np.bool_)
    is_working_day = (weekday < 5) & ~is_bank_holiday
    month_index = np.array([month_of[f"{d.year:04d}-{d.month:02d}"] for d in dates], np.int8)
    for array in (weekday, is_bank_holiday, is_working_day, month_index):
        array.flags.writeable = False
    return Calendar(
        dates=dates,
        weekday=weekday,
        month_index=month_index,
        is_bank_holiday=is_bank_holiday,
        is_working_day=is_working_day,
        months=months,
        weeks=tuple(iso_week_label(d) for d in dates),
    )

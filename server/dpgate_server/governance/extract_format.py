"""The raw extract a practice's system supplier uploads: columns, formats, what happens to each.

One CSV file per practice (UTF-8, comma-separated, a header row, one appointment a row).
This is the only place the identifying columns are named; ingest transforms or drops them
and no file the server writes ever holds them (README, "Provider uploads and governance").

| column               | format                        | at ingest                          |
|----------------------|-------------------------------|------------------------------------|
| practice_code        | the practice's code           | must be the uploaded practice      |
| nhs_number           | 10 digits, Modulus 11 check   | -> patient_key (keyed HMAC), dropped|
| date_of_birth        | YYYY-MM-DD                    | -> age band at the appointment, dropped |
| postcode             | full postcode (may be empty)  | dropped                            |
| sex                  | Female / Male                 | kept                               |
| appointment_datetime | YYYY-MM-DD HH:MM              | -> date, week, month, weekday, hour|
| booked_datetime      | YYYY-MM-DD HH:MM, or empty    | -> lead time in days and its band  |
| duration_minutes     | whole minutes 1..1440, or empty | kept, and its band               |
| mode, status, hcp_type, national_category, service_setting | the dataset's labels | kept |

Any other column is dropped as soon as the file is parsed.
"""

from __future__ import annotations

DATETIME_FORMAT = "%Y-%m-%d %H:%M"
DATE_FORMAT = "%Y-%m-%d"

PRACTICE_CODE = "practice_code"
NHS_NUMBER = "nhs_number"
DATE_OF_BIRTH = "date_of_birth"
POSTCODE = "postcode"
SEX = "sex"
APPOINTMENT_DATETIME = "appointment_datetime"
BOOKED_DATETIME = "booked_datetime"
DURATION_MINUTES = "duration_minutes"

CATEGORY_COLUMNS: tuple[str, ...] = (
    "mode",
    "status",
    "hcp_type",
    "national_category",
    "service_setting",
)
"""Columns whose values must be among the dataset's published labels (copied as they are)."""

RAW_COLUMNS: tuple[str, ...] = (
    PRACTICE_CODE,
    NHS_NUMBER,
    DATE_OF_BIRTH,
    POSTCODE,
    SEX,
    APPOINTMENT_DATETIME,
    BOOKED_DATETIME,
    DURATION_MINUTES,
    *CATEGORY_COLUMNS,
)
"""Every declared column, in the order the generator writes them."""

REQUIRED_COLUMNS: tuple[str, ...] = tuple(c for c in RAW_COLUMNS if c != POSTCODE)
"""Columns an extract must have (postcode is declared but optional: it is dropped anyway)."""

IDENTIFYING_COLUMNS: tuple[str, ...] = (NHS_NUMBER, DATE_OF_BIRTH, POSTCODE)
"""Columns whose values are never quoted in a message, a log or a file."""

MAX_DURATION_MINUTES = 24 * 60
"""Longest possible appointment; longer is a data error (the DP clamp handles 60..1440)."""
EARLIEST_BIRTH_YEAR = 1900

OPT_OUT_COLUMN = "nhs_number"
"""The one column of an opt-out list file (CSV with a header)."""

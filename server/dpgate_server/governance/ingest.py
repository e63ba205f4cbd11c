"""Ingest of one raw extract: validate it whole, then minimise it (DESIGN.md guarantee 6).

The extract arrives as bytes and is parsed in memory: it is never written to disk, so no
copy with NHS numbers, dates of birth or postcodes can be left behind by a crash. Either
every row passes every check and the minimised rows come back, or the whole extract is
refused listing each distinct problem once (its column, first lines and line count).

Minimisation keeps only what the `appointments` table needs:

- NHS number -> `patient_key` (pseudonym.patient_key: HMAC-SHA-256 under the server key),
- date of birth -> age band at the appointment,
- postcode and any undeclared column -> dropped as soon as parsed,
- appointment and booking times -> date, ISO week, month, weekday, hour, lead time in days,
- durations and lead times -> AGP's bands as well as the values.

Opt-outs are applied after this step, by the caller holding the governance lock, so the
rows staged always reflect the lists as they are at the moment of staging.
"""

from __future__ import annotations

import codecs
import csv
import datetime as dt
import functools
import io
from dataclasses import dataclass

import polars as pl

from dpgate_server.governance import extract_format as fmt
from dpgate_server.governance.errors import (
    LINES_NAMED_PER_PROBLEM,
    Problem,
    extract_rejected,
)
from dpgate_server.store.metadata import DatasetMetadata
from dpgate_server.store.pseudonym import ascii_patient_keys
from dpgate_server.vocabulary.appointment_categories import (
    AGE_BANDS,
    DURATION_BANDS,
    DURATION_LIMITS,
    LEAD_TIME_BANDS,
    LEAD_TIME_LIMITS,
)
from dpgate_server.vocabulary.nhs_number import expected_check_digit

STAGED_COLUMNS: dict[str, pl.DataType] = {
    "patient_key": pl.Int64(),
    "practice_code": pl.String(),
    "appointment_date": pl.Date(),
    "week": pl.String(),
    "month": pl.String(),
    "weekday": pl.String(),
    "hour": pl.Int32(),
    "duration_minutes": pl.Int64(),
    "duration_band": pl.String(),
    "lead_time_days": pl.Int64(),
    "lead_time_band": pl.String(),
    "mode": pl.String(),
    "status": pl.String(),
    "hcp_type": pl.String(),
    "national_category": pl.String(),
    "service_setting": pl.String(),
    "age_band": pl.String(),
    "sex": pl.String(),
}
"""A staged row: the appointments schema without the practice's hierarchy columns, which
publishing joins from the public practice table."""

_UTF8_BOM = b"\xef\xbb\xbf"
_NHS, _APPOINTMENT, _BOOKED, _BIRTH, _DURATION = (
    "_nhs",
    "_appointment",
    "_booked",
    "_birth",
    "_duration",
)
"""Parsed columns added beside the raw strings (each parsed once, then reused)."""
_NHS_MALFORMED, _NHS_BAD_CHECK, _BIRTH_DAY, _DAY, _FAILING = (
    "_nhs_malformed",
    "_nhs_bad_check",
    "_birth_day",
    "_day",
    "_failing",
)
"""Per distinct patient: the NHS number's two checks and the birth date as YYYYMMDD;
per date of the period: the date as YYYYMMDD; per row: whether any check fails."""
_DECODE_BLOCK = 1 << 20


@dataclass(frozen=True, slots=True)
class IngestPolicy:
    """What an extract must satisfy, all of it public policy of the dataset.

    Attributes:
        practice_code: the practice the extract is for (every row must say so).
        period_start: first day appointments may fall on.
        period_end: last day (inclusive).
        labels: for each category column and `sex`, the allowed labels.
    """

    practice_code: str
    period_start: dt.date
    period_end: dt.date
    labels: dict[str, tuple[str, ...]]

    @staticmethod
    def of(metadata: DatasetMetadata, practice_code: str) -> IngestPolicy:
        """The policy of `metadata`'s dataset for one practice's extract."""
        labels: dict[str, tuple[str, ...]] = {}
        for name in (*fmt.CATEGORY_COLUMNS, fmt.SEX):
            spec = metadata.column(name)
            if spec is None or spec.values is None:
                raise ValueError(f"dataset {metadata.dataset_id} declares no labels for {name}")
            labels[name] = tuple(str(v) for v in spec.values)
        return IngestPolicy(practice_code, metadata.period_start, metadata.period_end, labels)


@dataclass(frozen=True, slots=True)
class MinimisedExtract:
    """An accepted extract after minimisation (not yet filtered for opt-outs)."""

    rows: pl.DataFrame
    """Columns STAGED_COLUMNS, in the extract's row order."""


@dataclass(frozen=True, slots=True)
class _Check:
    """One row-level check: which rows fail it and what is wrong with them (one message
    for every failing row: it quotes no value, so a refusal lists the problem once)."""

    column: str
    failing: pl.Expr
    message: str


def minimise_extract(data: bytes, policy: IngestPolicy, key: bytes) -> MinimisedExtract:
    """Validate `data` (a raw CSV extract) and return its minimised rows.

    One lazy Polars plan over the parsed strings: each distinct patient (NHS number and
    date of birth as written) is checked, pseudonymised and aged once and joined back;
    each date of the dataset's period is formatted once and joined; every check is
    evaluated beside the minimised columns in the same pass. Only a refused extract is
    looked at again, row by row, to name its problems.

    Raises:
        GovernanceError: EXTRACT_REJECTED listing each distinct problem once; nothing
            about the extract is kept.
    """
    raw = _parse(data)
    parsed = _parsed(raw.lazy(), _identities(raw, key).lazy(), policy)
    failing = pl.any_horizontal(*(c.failing.fill_null(False) for c in _checks(raw, policy)))
    result = parsed.select(*_minimised(policy), failing.alias(_FAILING)).collect()
    if result.get_column(_FAILING).any():
        _check_rows(parsed.collect(), policy)
    return MinimisedExtract(rows=result.drop(_FAILING).cast(STAGED_COLUMNS))  # type: ignore[arg-type]


def _parse(data: bytes) -> pl.DataFrame:
    """The extract as a frame of strings (nulls for empty fields), or a refusal."""
    if not data.strip():
        raise extract_rejected([Problem(0, "", "the extract is empty")])
    if data.startswith(_UTF8_BOM):
        data = data[len(_UTF8_BOM) :]
    _check_utf8(data)
    header = _header(data)
    missing = [c for c in fmt.REQUIRED_COLUMNS if c not in header]
    duplicated = sorted({c for c in header if header.count(c) > 1})
    problems = [
        Problem(1, c, f"required column is missing (required: {', '.join(fmt.REQUIRED_COLUMNS)})")
        for c in missing
    ] + [Problem(1, c, "column appears more than once") for c in duplicated]
    if problems:
        raise extract_rejected(problems)
    wanted = [c for c in fmt.RAW_COLUMNS if c in header and c != fmt.POSTCODE]
    try:
        # Every column is read (so a row with more fields than the header is caught), then
        # only the declared ones are kept: postcode and undeclared columns go at once.
        frame = pl.read_csv(
            io.BytesIO(data), infer_schema=False, missing_utf8_is_empty_string=False
        ).select(wanted)
    except pl.exceptions.PolarsError:
        # Polars' message quotes the offending field: it may be an NHS number, so it is
        # never passed on. The usual cause is a row with more fields than the header.
        problem = Problem(
            0,
            "",
            "not a well-formed CSV file (a row has more fields than the header, or a "
            "quote is not closed)",
        )
        raise extract_rejected([problem]) from None
    if frame.height == 0:
        raise extract_rejected([Problem(0, "", "the extract has a header but no rows")])
    return frame


def _check_utf8(data: bytes) -> None:
    decoder = codecs.getincrementaldecoder("utf-8")()
    for start in range(0, len(data), _DECODE_BLOCK):
        block = data[start : start + _DECODE_BLOCK]
        try:
            decoder.decode(block, final=start + _DECODE_BLOCK >= len(data))
        except UnicodeDecodeError as exc:
            line = data[: start + max(exc.start, 0)].count(b"\n") + 1
            raise extract_rejected(
                [Problem(line, "", "the file is not UTF-8 text (is it compressed or corrupt?)")]
            ) from None


def _header(data: bytes) -> list[str]:
    first_line = data.split(b"\n", 1)[0].rstrip(b"\r").decode("utf-8")
    return next(csv.reader([first_line]), [])


def _identities(raw: pl.DataFrame, key: bytes) -> pl.DataFrame:
    """Each distinct (NHS number, date of birth) pair as written, checked and converted
    once: a patient has about six appointments, so every per-patient step (the Modulus 11
    check, the HMAC, the birth date) runs on a sixth of the rows and is joined back."""
    digits = pl.col(_NHS)
    well_formed = digits.str.contains(r"^\d{10}$")
    birth = pl.col(_BIRTH)
    pairs = (
        raw.select(fmt.NHS_NUMBER, fmt.DATE_OF_BIRTH)
        .unique()
        .with_columns(
            _nhs_digits().alias(_NHS),
            pl.col(fmt.DATE_OF_BIRTH)
            .str.strip_chars()
            .str.to_date(fmt.DATE_FORMAT, strict=False)
            .alias(_BIRTH),
        )
        .with_columns(
            (~well_formed).alias(_NHS_MALFORMED),
            (well_formed & ~_check_digit_matches(digits)).alias(_NHS_BAD_CHECK),
            _year_month_day(birth).alias(_BIRTH_DAY),
        )
    )
    valid = pairs.filter(~pl.col(_NHS_MALFORMED) & ~pl.col(_NHS_BAD_CHECK)).select(_NHS).unique()
    digits_ascii = valid.get_column(_NHS).cast(pl.Binary).to_list()
    keys = valid.with_columns(
        pl.Series("patient_key", ascii_patient_keys(key, digits_ascii), pl.Int64)
    )
    return pairs.join(keys, on=_NHS, how="left")


def _parsed(raw: pl.LazyFrame, identities: pl.LazyFrame, policy: IngestPolicy) -> pl.LazyFrame:
    """The raw strings with every parsed and joined column the checks and the minimised
    row need, in the extract's row order."""
    return (
        raw.with_columns(
            _datetime(fmt.APPOINTMENT_DATETIME).alias(_APPOINTMENT),
            _datetime(fmt.BOOKED_DATETIME).alias(_BOOKED),
            pl.col(fmt.DURATION_MINUTES)
            .str.strip_chars()
            .cast(pl.Int64, strict=False)
            .alias(_DURATION),
        )
        .with_columns(pl.col(_APPOINTMENT).dt.date().alias("appointment_date"))
        .join(
            identities,
            on=[fmt.NHS_NUMBER, fmt.DATE_OF_BIRTH],
            how="left",
            nulls_equal=True,
            maintain_order="left",
        )
        .with_columns(_calendar_columns(policy))
    )


def _calendar_columns(policy: IngestPolicy) -> list[pl.Expr]:
    """ISO week, month, weekday and YYYYMMDD of each row's appointment date, looked up by
    the date's offset in the period's calendar (public: a few hundred dates, each formatted
    once). Dates outside the period get the nearest end's values; such rows are refused."""
    calendar = _period_calendar(policy.period_start, policy.period_end)
    offset = (
        (pl.col("appointment_date") - pl.lit(policy.period_start))
        .dt.total_days()
        .clip(0, calendar.height - 1)
    )
    return [
        pl.lit(calendar.get_column(name)).gather(offset).alias(name)
        for name in ("week", "month", "weekday", _DAY)
    ]


def _check_rows(parsed: pl.DataFrame, policy: IngestPolicy) -> None:
    """Evaluate every check on every row; refuse listing each failing check once, with
    its first lines and how many lines fail it, in the order of their first lines."""
    checks = _checks(parsed, policy)
    failing = parsed.select(
        *(c.failing.fill_null(False).alias(f"check_{i}") for i, c in enumerate(checks))
    )
    totals = failing.sum().row(0)
    problems = []
    for i, count in enumerate(totals):
        if count:
            rows = failing.get_column(f"check_{i}").arg_true().head(LINES_NAMED_PER_PROBLEM)
            lines = [int(r) + 2 for r in rows]
            check = checks[i]
            problems.append(
                Problem(lines[0], check.column, check.message, tuple(lines[1:]), int(count))
            )
    if problems:
        order = {name: i for i, name in enumerate(parsed.columns)}
        problems.sort(key=lambda p: (p.line, order.get(p.column, len(order))))
        raise extract_rejected(problems)


def _checks(frame: pl.DataFrame, policy: IngestPolicy) -> list[_Check]:
    """Every row-level check, in the order problems on one row are reported. A column
    with no nulls cannot fail its "required" check, which is then left out."""
    nullable = {fmt.BOOKED_DATETIME, fmt.DURATION_MINUTES}
    checks = [
        _Check(name, pl.col(name).is_null(), "a value is required")
        for name in frame.columns
        if name in fmt.RAW_COLUMNS
        and name not in nullable
        and frame.get_column(name).null_count() > 0
    ]
    appointment = pl.col(_APPOINTMENT)
    booked = pl.col(_BOOKED)
    birth = pl.col(_BIRTH)
    duration = pl.col(_DURATION)
    start, end = policy.period_start, policy.period_end
    code = policy.practice_code
    checks += [
        _Check(
            fmt.PRACTICE_CODE,
            pl.col(fmt.PRACTICE_CODE) != code,
            f"not the practice being uploaded ({code})",
        ),
        _Check(
            fmt.NHS_NUMBER,
            pl.col(_NHS_MALFORMED),
            "an NHS number is 10 digits",
        ),
        _Check(
            fmt.NHS_NUMBER,
            pl.col(_NHS_BAD_CHECK),
            "the check digit does not match (Modulus 11): mistyped number?",
        ),
        _Check(
            fmt.DATE_OF_BIRTH,
            pl.col(fmt.DATE_OF_BIRTH).is_not_null() & birth.is_null(),
            "not a date in the form YYYY-MM-DD",
        ),
        _Check(
            fmt.DATE_OF_BIRTH,
            pl.col(_BIRTH_DAY) < fmt.EARLIEST_BIRTH_YEAR * 10_000,
            f"before {fmt.EARLIEST_BIRTH_YEAR}",
        ),
        _Check(
            fmt.DATE_OF_BIRTH,
            birth > pl.col("appointment_date"),
            "after the appointment",
        ),
        _Check(
            fmt.APPOINTMENT_DATETIME,
            pl.col(fmt.APPOINTMENT_DATETIME).is_not_null() & appointment.is_null(),
            "not a date and time in the form YYYY-MM-DD HH:MM",
        ),
        _Check(
            fmt.APPOINTMENT_DATETIME,
            ~pl.col("appointment_date").is_between(start, end),
            f"outside the dataset's period {start} to {end}",
        ),
        _Check(
            fmt.BOOKED_DATETIME,
            pl.col(fmt.BOOKED_DATETIME).is_not_null() & booked.is_null(),
            "not a date and time in the form YYYY-MM-DD HH:MM",
        ),
        _Check(
            fmt.BOOKED_DATETIME,
            booked > appointment,
            "booked after the appointment",
        ),
        _Check(
            fmt.DURATION_MINUTES,
            pl.col(fmt.DURATION_MINUTES).is_not_null() & duration.is_null(),
            "not a whole number of minutes",
        ),
        _Check(
            fmt.DURATION_MINUTES,
            ~duration.is_between(1, fmt.MAX_DURATION_MINUTES),
            f"not a possible duration (1 to {fmt.MAX_DURATION_MINUTES} minutes)",
        ),
    ]
    for name, labels in policy.labels.items():
        checks.append(
            _Check(
                name,
                pl.col(name).is_not_null() & ~pl.col(name).is_in(labels),
                f"not one of the dataset's labels: {', '.join(labels)}",
            )
        )
    return checks


def _nhs_digits() -> pl.Expr:
    return pl.col(fmt.NHS_NUMBER).str.replace_all(" ", "", literal=True)


def _check_digit_matches(nhs: pl.Expr) -> pl.Expr:
    """The Modulus 11 check (`vocabulary.nhs_number`), on 10-digit strings: the digits by
    integer arithmetic on the number (ten string slices cost about ten times as much)."""
    number = nhs.cast(pl.Int64, strict=False)
    digit: list[pl.Expr] = [(number // 10 ** (9 - i)) % 10 for i in range(10)]
    matches: pl.Expr = expected_check_digit(digit[:9]) == digit[9]
    return matches


def _datetime(name: str) -> pl.Expr:
    return pl.col(name).str.strip_chars().str.to_datetime(fmt.DATETIME_FORMAT, strict=False)


def _year_month_day(day: pl.Expr) -> pl.Expr:
    """A date as the integer YYYYMMDD: whole years between two dates are then one
    subtraction and a floor division (`_age`)."""
    year, month, of_month = (
        part.cast(pl.Int32) for part in (day.dt.year(), day.dt.month(), day.dt.day())
    )
    return year * 10_000 + month * 100 + of_month


def _minimised(policy: IngestPolicy) -> list[pl.Expr]:
    """The staged columns, from `_parsed`'s columns."""
    day = pl.col("appointment_date")
    lead_time = (day - pl.col(_BOOKED).dt.date()).dt.total_days()
    return [
        pl.col("patient_key"),
        pl.lit(policy.practice_code).alias("practice_code"),
        day,
        pl.col("week"),
        pl.col("month"),
        pl.col("weekday"),
        pl.col(_APPOINTMENT).dt.hour().alias("hour"),
        pl.col(_DURATION).alias("duration_minutes"),
        _band(pl.col(_DURATION), DURATION_LIMITS, DURATION_BANDS, DURATION_BANDS[-1]).alias(
            "duration_band"
        ),
        lead_time.alias("lead_time_days"),
        _band(lead_time, LEAD_TIME_LIMITS, LEAD_TIME_BANDS, LEAD_TIME_BANDS[-2]).alias(
            "lead_time_band"
        ),
        *(pl.col(c) for c in fmt.CATEGORY_COLUMNS),
        _age_band(_age(pl.col(_BIRTH_DAY), pl.col(_DAY))).alias("age_band"),
        pl.col(fmt.SEX),
    ]


@functools.cache
def _period_calendar(start: dt.date, end: dt.date) -> pl.DataFrame:
    """Every date from `start` to `end` with its calendar columns (cached per period)."""
    day = pl.col("appointment_date")
    return pl.DataFrame({"appointment_date": pl.date_range(start, end, eager=True)}).with_columns(
        pl.format("{}-W{}", day.dt.iso_year(), day.dt.week().cast(pl.String).str.zfill(2)).alias(
            "week"
        ),
        day.dt.strftime("%Y-%m").alias("month"),
        day.dt.strftime("%a").alias("weekday"),
        _year_month_day(day).alias(_DAY),
    )


def _band(
    value: pl.Expr, limits: tuple[tuple[int, int], ...], labels: tuple[str, ...], overflow: str
) -> pl.Expr:
    """The AGP band of `value`; null is the last label (unknown), outside the bands
    `overflow` (durations over an hour are AGP's data-quality band; long leads stay in the
    top band). The bands are contiguous, so a binary search on their upper limits finds
    the band (a chain of when/then costs one pass per band)."""
    table = pl.Series([*labels[: len(limits)], overflow, labels[-1]], dtype=pl.String)
    uppers = pl.Series([high for _, high in limits], dtype=pl.Int64)
    index = (
        pl.when(value.is_null())
        .then(pl.lit(len(limits) + 1, pl.UInt32))
        .when(value < limits[0][0])
        .then(pl.lit(len(limits), pl.UInt32))
        .otherwise(pl.lit(uppers).search_sorted(value.cast(pl.Int64), side="left"))
    )
    return pl.lit(table).gather(index)


def _age(birth_day: pl.Expr, day: pl.Expr) -> pl.Expr:
    """Age in whole years on `day`, both as YYYYMMDD (the birthday counts on the day
    itself: MMDD on or after the birth's MMDD adds the year)."""
    return (day - birth_day) // 10_000


_AGE_UPPERS = pl.Series(
    [int(b.partition("-")[2]) if "-" in b else 10_000 for b in AGE_BANDS], dtype=pl.Int64
)


def _age_band(age: pl.Expr) -> pl.Expr:
    """The published age band of an age in whole years (null if unknown or impossible)."""
    table = pl.Series([*AGE_BANDS, None], dtype=pl.String)
    index = (
        pl.when(age.is_null() | (age < 0))
        .then(pl.lit(len(AGE_BANDS), pl.UInt32))
        .otherwise(pl.lit(_AGE_UPPERS).search_sorted(age.cast(pl.Int64), side="left"))
    )
    return pl.lit(table).gather(index)

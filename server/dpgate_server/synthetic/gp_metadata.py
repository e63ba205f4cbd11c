"""The public policy of the "gp_appointments" dataset, built only from public parameters.

Everything here comes from the practice table of the chosen practices, the calendar, the
published label sets and declared bounds, never from generated rows: two runs with
different seeds over the same practices produce byte-identical metadata.
"""

from __future__ import annotations

import dataclasses

from dpgate_server.store.metadata import (
    ColumnKind,
    ColumnSpec,
    DatasetMetadata,
    KeyValue,
    Visibility,
)
from dpgate_server.store.period_bounds import PeriodBounds, PeriodCap
from dpgate_server.synthetic.population import PracticeTable
from dpgate_server.vocabulary.accounting import Accounting
from dpgate_server.vocabulary.appointment_categories import (
    AGE_BANDS,
    DURATION_BANDS,
    HCP_TYPES,
    LEAD_TIME_BANDS,
    MAX_LEAD_TIME_DAYS,
    MODES,
    NATIONAL_CATEGORIES,
    SERVICE_SETTINGS,
    SEXES,
    STATUSES,
)
from dpgate_server.vocabulary.england_calendar import (
    WEEKDAY_LABELS,
    WINDOW_END,
    WINDOW_START,
    window_calendar,
)

DATASET_ID = "gp_appointments"
ZCDP_DATASET_ID = "gp_appointments_zcdp"
"""The demo's zCDP twin: the same rows, cut to DEMO_PERIOD_BOUNDS, charged in rho."""
DEMO_PERIOD_BOUNDS = PeriodBounds(
    (
        PeriodCap("week", rows=3, periods=10, practice_periods=10),
        PeriodCap("month", rows=6, periods=8, practice_periods=8),
    )
)
"""The zCDP demo's per-period bounds (policy): a practice x week count is then charged
rho 45 at scale 1 instead of 288, a practice x month count 144 (docs/per-period-bounds.md)."""
MAX_CONTRIBUTIONS = 24
"""Appointments one patient may contribute to any query (a year's visits for almost all)."""
DURATION_BOUNDS = (0, 60)
LEAD_TIME_BOUNDS = (0, MAX_LEAD_TIME_DAYS)
PUBLIC_TABLES = ("practices", "calendar", "categories")

CATEGORY_SETS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("duration_band", DURATION_BANDS),
    ("lead_time_band", LEAD_TIME_BANDS),
    ("mode", MODES),
    ("status", STATUSES),
    ("hcp_type", HCP_TYPES),
    ("national_category", NATIONAL_CATEGORIES),
    ("service_setting", SERVICE_SETTINGS),
    ("age_band", AGE_BANDS),
    ("sex", SEXES),
)
"""The published label sets of the categorical columns, in display order."""

_CATEGORY_DESCRIPTIONS = {
    "duration_band": "Recorded length of an attended appointment, in AGP's bands.",
    "lead_time_band": "Time from booking to appointment, in AGP's bands.",
    "mode": "How the appointment took place.",
    "status": "Attended, did not attend (DNA) or not recorded.",
    "hcp_type": "Type of healthcare professional.",
    "national_category": "NHS England national appointment category (19 labels).",
    "service_setting": "Service setting of the appointment.",
    "age_band": "Patient's age band (date of birth is never stored).",
    "sex": "Patient's sex as registered.",
}


def max_rows(practices: PracticeTable) -> int:
    """Public ceiling on the row count: k rows for every registered patient, at most."""
    ceiling = MAX_CONTRIBUTIONS * int(practices.list_size.sum())
    return max(1, min(ceiling, 4_294_967_295))


def gp_appointments_metadata(practices: PracticeTable) -> DatasetMetadata:
    """Metadata of a synthetic GP appointments version over `practices`."""
    return DatasetMetadata(
        dataset_id=DATASET_ID,
        title="GP appointments in England (synthetic)",
        description=(
            "One row per appointment recorded in GP practice systems, December 2024 to "
            "November 2025, synthetic but shaped like NHS England's Appointments in General "
            "Practice. Patients on the national data opt-out are excluded; each patient "
            f"contributes at most {MAX_CONTRIBUTIONS} appointments."
        ),
        privacy_unit="patient_key",
        max_contributions=MAX_CONTRIBUTIONS,
        accounting=Accounting.PURE_DP,
        max_rows=max_rows(practices),
        period_start=WINDOW_START,
        period_end=WINDOW_END,
        columns=_columns(practices),
        public_tables=PUBLIC_TABLES,
    )


def gp_appointments_zcdp_metadata(practices: PracticeTable) -> DatasetMetadata:
    """Metadata of the zCDP twin: rho accounting and the demo's per-period bounds."""
    base = gp_appointments_metadata(practices)
    return dataclasses.replace(
        base,
        dataset_id=ZCDP_DATASET_ID,
        title="GP appointments in England (synthetic, zCDP, per-period bounds)",
        description=(
            base.description
            + " Each patient also contributes at most 3 appointments a week in at most 10 "
            "weeks (10 practice-weeks), and at most 6 a month in at most 8 months; privacy "
            "spend is rho (zero-concentrated DP, Gaussian noise)."
        ),
        accounting=Accounting.ZCDP,
        period_bounds=DEMO_PERIOD_BOUNDS,
    )


def _columns(practices: PracticeTable) -> tuple[ColumnSpec, ...]:
    calendar = window_calendar()
    return (
        ColumnSpec(
            name="patient_key",
            kind=ColumnKind.INTEGER,
            visibility=Visibility.PRIVATE,
            description="Keyed pseudonym of the patient: the privacy unit, never returned.",
        ),
        _practice_column("practice_code", "GP practice (ODS-style code).", practices.practice_code),
        _practice_column("pcn_code", "Primary care network of the practice.", practices.pcn_code),
        _practice_column(
            "sub_icb_code", "Sub-ICB location of the practice.", practices.sub_icb_code
        ),
        _practice_column("icb_code", "Integrated care board (ONS code).", practices.icb_code),
        _practice_column("region_code", "NHS England region (ONS code).", practices.region_code),
        _calendar_column(
            "appointment_date", ColumnKind.DATE, "Day of the appointment.", calendar.dates
        ),
        _calendar_column(
            "week", ColumnKind.STRING, "ISO week, e.g. 2025-W03.", calendar.week_labels()
        ),
        _calendar_column("month", ColumnKind.STRING, "Month, e.g. 2025-01.", calendar.months),
        _calendar_column(
            "weekday", ColumnKind.STRING, "Day of the week, Mon..Sun.", WEEKDAY_LABELS
        ),
        ColumnSpec(
            name="hour",
            kind=ColumnKind.INTEGER,
            visibility=Visibility.PUBLIC,
            description="Hour of the day the appointment started (0-23).",
            groupable=True,
            filterable=True,
            values=tuple(range(24)),
            bounds=(0, 23),
        ),
        _measure_column(
            "duration_minutes",
            "Recorded minutes of an attended appointment; null when unknown. SUM clamps to 0-60.",
            DURATION_BOUNDS,
        ),
        _measure_column(
            "lead_time_days",
            "Days from booking to appointment; null when unknown. SUM clamps to 0-90.",
            LEAD_TIME_BOUNDS,
        ),
        *(
            _category_column(name, _CATEGORY_DESCRIPTIONS[name], labels)
            for name, labels in CATEGORY_SETS
        ),
    )


def _distinct(values: tuple[str, ...]) -> tuple[KeyValue, ...]:
    return tuple(dict.fromkeys(values))


def _practice_column(name: str, description: str, values: tuple[str, ...]) -> ColumnSpec:
    return ColumnSpec(
        name=name,
        kind=ColumnKind.STRING,
        visibility=Visibility.PUBLIC,
        description=description,
        groupable=True,
        filterable=True,
        values=_distinct(values),
        key_table="practices",
    )


def _calendar_column(
    name: str, kind: ColumnKind, description: str, values: tuple[KeyValue, ...]
) -> ColumnSpec:
    return ColumnSpec(
        name=name,
        kind=kind,
        visibility=Visibility.PUBLIC,
        description=description,
        groupable=True,
        filterable=True,
        values=tuple(values),
        key_table="calendar",
    )


def _measure_column(name: str, description: str, bounds: tuple[int, int]) -> ColumnSpec:
    return ColumnSpec(
        name=name,
        kind=ColumnKind.INTEGER,
        visibility=Visibility.PUBLIC,
        description=description,
        filterable=True,
        bounds=bounds,
        summable=True,
    )


def _category_column(name: str, description: str, labels: tuple[str, ...]) -> ColumnSpec:
    return ColumnSpec(
        name=name,
        kind=ColumnKind.STRING,
        visibility=Visibility.PUBLIC,
        description=description,
        groupable=True,
        filterable=True,
        values=tuple(labels),
    )

"""Measure a generated version against the AGP generator checklist (AGP_REFERENCE.md).

Plain (non-DP) statistics over a synthetic version's files, for the generator's tests and
benchmark only: real datasets are never read this way. Each figure is named after its
checklist line; the tests hold the tolerances.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from dpgate_server.store.store import DatasetVersion
from dpgate_server.synthetic.population import (
    PracticeTable,
    draw_patients,
    england_practices,
    select_practices,
)
from dpgate_server.vocabulary.england_calendar import window_calendar

_SAME_OR_NEXT_DAY = ("Same Day", "1 Day")
_WITHIN_SEVEN_DAYS = ("Same Day", "1 Day", "2 to 7 Days")


@dataclass(frozen=True, slots=True)
class VolumeFigures:
    rows: int
    registered_patients: int
    opted_out_patients: int
    per_included_patient: float
    """Rows per registered patient not opted out (AGP: 5.86)."""
    per_included_patient_before_bound: float
    opt_out_share: float
    national_rows_projection: float
    """rows scaled by England's registered patients / the sample's."""


@dataclass(frozen=True, slots=True)
class RowFigures:
    """Shares (0-1) of appointments, and the checklist's ratios."""

    status: dict[str, float]
    mode: dict[str, float]
    hcp_type: dict[str, float]
    lead_time_band: dict[str, float]
    national_category: dict[str, float]
    service_setting: dict[str, float]
    october_dna: float
    within_seven_days: float
    non_attended_ratio_two_plus_days: float
    """Non-attended rate 2+ days ahead / same or next day (checklist: >= 1.8)."""
    weekday_share: float
    monday_friday_ratio: float
    saturday_dna_ratio: float
    bank_holiday_relative: float
    """Mean per bank holiday / mean per working day."""
    per_working_day_ratio: dict[str, float]
    """Month label -> volume per working day / the year's mean per working day."""


@dataclass(frozen=True, slots=True)
class PracticeFigures:
    practices: int
    sub_icbs: int
    icbs: int
    regions: int
    list_size_median: float
    list_size_q1: float
    list_size_q3: float
    list_size_p95: float


@dataclass(frozen=True, slots=True)
class PatientFigures:
    female: float
    aged_65_plus: float
    aged_0_14: float


def volume_figures(version: DatasetVersion) -> VolumeFigures:
    source = version.manifest.source
    registered = int(source["registered_patients"])
    opted_out = int(source["opted_out_patients"])
    rows = int(source["rows"])
    included = registered - opted_out
    national = int(england_practices().list_size.sum())
    return VolumeFigures(
        rows=rows,
        registered_patients=registered,
        opted_out_patients=opted_out,
        per_included_patient=rows / included,
        per_included_patient_before_bound=int(source["rows_before_bound"]) / included,
        opt_out_share=opted_out / registered,
        national_rows_projection=rows * national / registered,
    )


def row_figures(version: DatasetVersion) -> RowFigures:
    scan = version.scan_appointments()
    days = _day_figures(scan)
    return RowFigures(
        status=_shares(scan, "status"),
        mode=_shares(scan, "mode"),
        hcp_type=_shares(scan, "hcp_type"),
        lead_time_band=_shares(scan, "lead_time_band"),
        national_category=_shares(scan, "national_category"),
        service_setting=_shares(scan, "service_setting"),
        october_dna=_rate(scan.filter(pl.col("month") == "2025-10"), pl.col("status") == "DNA"),
        within_seven_days=_rate(scan, pl.col("lead_time_band").is_in(_WITHIN_SEVEN_DAYS)),
        non_attended_ratio_two_plus_days=_non_attended_ratio(scan),
        weekday_share=_rate(scan, ~pl.col("weekday").is_in(["Sat", "Sun"])),
        saturday_dna_ratio=_rate(scan.filter(pl.col("weekday") == "Sat"), pl.col("status") == "DNA")
        / _rate(scan.filter(~pl.col("weekday").is_in(["Sat", "Sun"])), pl.col("status") == "DNA"),
        monday_friday_ratio=days.monday_friday_ratio,
        bank_holiday_relative=days.bank_holiday_relative,
        per_working_day_ratio=days.per_working_day_ratio,
    )


def practice_figures(practices: PracticeTable | None = None) -> PracticeFigures:
    """Figures of a practice table (default: all of England's in the model)."""
    table = england_practices() if practices is None else practices
    q1, median, q3, p95 = np.percentile(table.list_size, [25, 50, 75, 95])
    return PracticeFigures(
        practices=len(table),
        sub_icbs=len(set(table.sub_icb_code)),
        icbs=len(set(table.icb_code)),
        regions=len(set(table.region_code)),
        list_size_median=float(median),
        list_size_q1=float(q1),
        list_size_q3=float(q3),
        list_size_p95=float(p95),
    )


def patient_figures(version: DatasetVersion) -> PatientFigures:
    """Registered patients' sex and age of the version's practices (redrawn from its seed)."""
    source = version.manifest.source
    table = select_practices(source["practices"])
    female = old = young = total = 0
    for position in range(len(table)):
        patients = draw_patients(
            int(source["seed"]),
            int(table.index[position]),
            int(table.list_size[position]),
            int(table.first_patient[position]),
        )
        female += int((patients.sex == 0).sum())
        old += int((patients.age_band >= 7).sum())
        young += int((patients.age_band <= 1).sum())
        total += patients.sex.size
    return PatientFigures(female=female / total, aged_65_plus=old / total, aged_0_14=young / total)


def _shares(scan: pl.LazyFrame, column: str) -> dict[str, float]:
    counts = scan.group_by(column).len().collect(engine="streaming")
    total = int(counts["len"].sum())
    return {str(k): int(n) / total for k, n in counts.iter_rows()}


def _rate(scan: pl.LazyFrame, condition: pl.Expr) -> float:
    return float(scan.select(condition.mean()).collect(engine="streaming").item())


def _non_attended_ratio(scan: pl.LazyFrame) -> float:
    non_attended = pl.col("status") != "Attended"
    near = scan.filter(pl.col("lead_time_band").is_in(_SAME_OR_NEXT_DAY))
    ahead = scan.filter(
        ~pl.col("lead_time_band").is_in([*_SAME_OR_NEXT_DAY, "Unknown / Data Quality"])
    )
    return _rate(ahead, non_attended) / _rate(near, non_attended)


@dataclass(frozen=True, slots=True)
class _DayFigures:
    monday_friday_ratio: float
    bank_holiday_relative: float
    per_working_day_ratio: dict[str, float]


def _day_figures(scan: pl.LazyFrame) -> _DayFigures:
    calendar = window_calendar()
    per_day = (
        scan.group_by("appointment_date").len().collect(engine="streaming").sort("appointment_date")
    )
    counts = dict(zip(per_day["appointment_date"].to_list(), per_day["len"].to_list(), strict=True))
    volume = np.array([counts.get(d, 0) for d in calendar.dates], dtype=np.float64)
    normal = ~calendar.is_bank_holiday
    monday = volume[(calendar.weekday == 0) & normal].mean()
    friday = volume[(calendar.weekday == 4) & normal].mean()
    working = volume[calendar.is_working_day].mean()
    working_days = calendar.working_days_per_month()
    monthly = np.bincount(calendar.month_index, weights=volume, minlength=len(calendar.months))
    yearly = volume.sum() / working_days.sum()
    return _DayFigures(
        monday_friday_ratio=float(monday / friday),
        bank_holiday_relative=float(volume[calendar.is_bank_holiday].mean() / working),
        per_working_day_ratio={
            label: float(monthly[i] / working_days[i] / yearly)
            for i, label in enumerate(calendar.months)
        },
    )

"""Drawing one practice's year of appointments from the model, vectorised with numpy.

Every practice has its own random stream, seeded by (seed, practice index), so its rows are
the same whichever other practices a run includes and however practices are chunked. Rows
come back sorted by day and hour; the bound of `max_contributions` rows per patient is
applied here (patients belong to one practice in this model) and verified globally later.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from dpgate_server.store.bounding import truncation_mask
from dpgate_server.synthetic.appointment_model import (
    APPOINTMENT_DISPERSION,
    DNA_BASE,
    EXTENDED_ACCESS,
    HOUR_PROFILE_EXTENDED_ACCESS,
    HOUR_PROFILE_WEEKDAY,
    HOUR_PROFILE_WEEKEND,
    PLANNED_CLINICAL_PROCEDURE,
    PRACTICE_DNA_SD,
    PRACTICE_UNKNOWN_SD,
    UNKNOWN_STATUS_BASE,
    AppointmentModel,
)
from dpgate_server.synthetic.population import PracticePatients
from dpgate_server.vocabulary.appointment_categories import (
    DURATION_LIMITS,
    LEAD_TIME_LIMITS,
    MAX_LEAD_TIME_DAYS,
    NATIONAL_CATEGORIES,
)
from dpgate_server.vocabulary.england_calendar import window_calendar

_APPOINTMENTS_STREAM = 1
_UNKNOWN_DURATION_BAND = len(DURATION_LIMITS)
_UNKNOWN_LEAD_BAND = len(LEAD_TIME_LIMITS)
_LONG_LEAD_MEAN_EXCESS = 18.0
"""Days beyond 28 of a "More than 28 Days" booking: truncated exponential up to the horizon."""

Codes = npt.NDArray[np.int8]


@dataclass(frozen=True, slots=True)
class PracticeAppointments:
    """One practice's appointments, as small-integer codes (labels are in appointment_model).

    `duration_minutes` and `lead_time_days` use -1 for unknown.
    """

    patient: npt.NDArray[np.int64]
    """Index of the patient in the practice's PracticePatients."""
    day: npt.NDArray[np.int16]
    """Day of the window (0 = 1 Dec 2024)."""
    hour: Codes
    national_category: Codes
    mode: Codes
    hcp_type: Codes
    lead_time_band: Codes
    lead_time_days: npt.NDArray[np.int16]
    status: Codes
    duration_band: Codes
    duration_minutes: npt.NDArray[np.int16]
    service_setting: Codes
    rows_before_bound: int

    def __len__(self) -> int:
        return int(self.patient.size)


def sample(
    rng: np.random.Generator,
    cdf: npt.NDArray[np.float64],
    state: npt.NDArray[np.int64] | None,
    size: int,
) -> npt.NDArray[np.int64]:
    """One categorical draw per row from the CDF row `state[i]` (or the single CDF `cdf`).

    Row s of the table is shifted to (s, s + 1], so one `searchsorted` over the flattened
    table serves every state at once.
    """
    u = rng.random(size)
    if state is None:
        return np.searchsorted(cdf, u, side="right").astype(np.int64)
    states, width = cdf.shape
    flat = (np.arange(states, dtype=np.float64)[:, None] + cdf).ravel()
    position = np.searchsorted(flat, state + u, side="right")
    codes: npt.NDArray[np.int64] = np.minimum(position - state * width, width - 1).astype(np.int64)
    return codes


def draw_appointments(
    model: AppointmentModel,
    seed: int,
    practice_index: int,
    patients: PracticePatients,
    max_contributions: int,
) -> PracticeAppointments:
    """The year's appointments of one practice's patients who have not opted out."""
    rng = np.random.default_rng([seed, practice_index, _APPOINTMENTS_STREAM])
    practice_dna = np.exp(rng.normal(0.0, PRACTICE_DNA_SD) - PRACTICE_DNA_SD**2 / 2)
    practice_unknown = np.exp(rng.normal(0.0, PRACTICE_UNKNOWN_SD) - PRACTICE_UNKNOWN_SD**2 / 2)

    included = np.flatnonzero(~patients.opted_out)
    mean = model.rate[patients.sex[included], patients.age_band[included]]
    shape = APPOINTMENT_DISPERSION
    counts = rng.poisson(mean * rng.gamma(shape, 1.0 / shape, included.size))
    patient = np.repeat(included, counts)
    rows_before_bound = int(patient.size)
    # Bound each patient to max_contributions random rows; only heavy users need a draw.
    heavy = np.repeat(counts > max_contributions, counts)
    keep = np.ones(patient.size, dtype=np.bool_)
    keep[heavy] = truncation_mask(patient[heavy], max_contributions, rng)
    patient = patient[keep]
    n = int(patient.size)

    calendar = window_calendar()
    age = patients.age_band[patient].astype(np.int64)
    day = sample(rng, model.day_cdf, None, n)
    month = calendar.month_index[day].astype(np.int64)
    weekday = calendar.weekday[day]
    weekend = (weekday >= 5) | calendar.is_bank_holiday[day]

    vaccine = rng.random(n) < model.vaccine_probability[month, age]
    category = sample(rng, model.category_cdf, age, n)
    category[vaccine] = PLANNED_CLINICAL_PROCEDURE
    categories = len(NATIONAL_CATEGORIES)
    mode = sample(
        rng, model.mode_cdf, np.where(vaccine, 12 * categories, month * categories + category), n
    )
    parent = np.where(vaccine, categories, category)
    hcp = sample(rng, model.hcp_cdf, parent, n)
    lead_band = sample(rng, model.lead_cdf, parent, n)

    p_dna = (
        DNA_BASE
        * practice_dna
        * model.dna_lead[lead_band]
        * model.dna_mode[mode]
        * model.dna_age[age]
        * model.dna_month[month]
        * np.where(weekday == 5, model.dna_saturday, 1.0)
    )
    p_unknown = (
        UNKNOWN_STATUS_BASE
        * practice_unknown
        * model.unknown_lead[lead_band]
        * model.unknown_month[month]
    )
    u = rng.random(n)
    status = np.where(u < p_dna, 1, np.where(u < p_dna + p_unknown, 2, 0))

    duration_band = sample(rng, model.duration_cdf, mode, n)
    duration_band[status != 0] = _UNKNOWN_DURATION_BAND  # AGP times attended appointments only
    minutes = _within_band(rng, duration_band, DURATION_LIMITS)
    lead_days = _within_band(rng, lead_band, LEAD_TIME_LIMITS)
    long_lead = lead_band == len(LEAD_TIME_LIMITS) - 1
    lead_days[long_lead] = _long_lead_days(rng, int(long_lead.sum()))

    setting = sample(rng, model.setting_cdf, weekend.astype(np.int64), n)
    profile = np.where(
        weekend,
        HOUR_PROFILE_WEEKEND,
        np.where(setting == EXTENDED_ACCESS, HOUR_PROFILE_EXTENDED_ACCESS, HOUR_PROFILE_WEEKDAY),
    )
    hour = sample(rng, model.hour_cdf, profile, n)

    order = np.lexsort((hour, day))
    return PracticeAppointments(
        patient=patient[order],
        day=day[order].astype(np.int16),
        hour=hour[order].astype(np.int8),
        national_category=category[order].astype(np.int8),
        mode=mode[order].astype(np.int8),
        hcp_type=hcp[order].astype(np.int8),
        lead_time_band=lead_band[order].astype(np.int8),
        lead_time_days=lead_days[order],
        status=status[order].astype(np.int8),
        duration_band=duration_band[order].astype(np.int8),
        duration_minutes=minutes[order],
        service_setting=setting[order].astype(np.int8),
        rows_before_bound=rows_before_bound,
    )


def _within_band(
    rng: np.random.Generator, band: npt.NDArray[np.int64], limits: tuple[tuple[int, int], ...]
) -> npt.NDArray[np.int16]:
    """A whole number uniformly inside each row's band; -1 for the unknown band."""
    low = np.array([lo for lo, _ in limits] + [-1])[band]
    width = np.array([hi - lo + 1 for lo, hi in limits] + [1])[band]
    value = low + np.floor(rng.random(band.size) * width).astype(np.int64)
    return np.where(band == len(limits), -1, value).astype(np.int16)


def _long_lead_days(rng: np.random.Generator, size: int) -> npt.NDArray[np.int16]:
    """29..90 days: most just over four weeks, a few at the booking horizon."""
    span = MAX_LEAD_TIME_DAYS - 28
    tail = 1 - np.exp(-span / _LONG_LEAD_MEAN_EXCESS)
    excess = -_LONG_LEAD_MEAN_EXCESS * np.log1p(-rng.random(size) * tail)
    days: npt.NDArray[np.int16] = (29 + np.minimum(np.floor(excess), span - 1)).astype(np.int16)
    return days

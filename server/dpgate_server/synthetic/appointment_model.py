"""The appointment model's public parameters: AGP's published shares and how they depend.

Each attribute of an appointment is drawn from a conditional table. The tables are built
once from (a) NHS England's published marginals (AGP_REFERENCE.md) and (b) an association
pattern saying which way the attribute leans given its parent (acute problems are booked on
the day, home visits go to the very old, triage is by telephone). Iterative proportional
fitting then makes each table reproduce the published marginal exactly, so dependencies
never distort the national shares. Nothing here depends on a seed or on generated rows.

The chain, per appointment: day (month, weekday, bank holiday) and the patient's age band
-> October vaccination clinic or not -> national category -> mode, HCP type, lead time ->
status (DNA and Unknown rise with lead time; DNA falls from face-to-face to telephone to
video; doubles on Saturdays) -> duration (attended only) ; day type -> service setting ->
hour.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np
import numpy.typing as npt

from dpgate_server.synthetic.population import AGE_SEX_SHARES, opt_out_probability
from dpgate_server.vocabulary.appointment_categories import (
    AGE_BANDS,
    MODES,
    NATIONAL_CATEGORIES,
    SERVICE_SETTINGS,
)
from dpgate_server.vocabulary.england_calendar import window_calendar

Matrix = npt.NDArray[np.float64]

# National category: (exact label, % of all appointments Dec 2024 - Nov 2025, age leaning,
# mode leaning (F2F, Tel, Video, Home, Unknown), HCP leaning (GP, Other, Unknown),
# lead-time leaning (Same, 1, 2-7, 8-14, 15-21, 22-28, 28+, Unknown)).
_ONES8 = (1.0,) * 8
_AGE_FLAT = (1.0,) * 10
_AGE_CARE_HOME = (0.01, 0.01, 0.01, 0.01, 0.02, 0.05, 0.1, 0.5, 2.0, 8.0)
_AGE_HOUSEBOUND = (0.05, 0.02, 0.02, 0.02, 0.05, 0.1, 0.3, 0.8, 2.5, 6.0)
_BOOKED_AHEAD = (0.35, 0.8, 1.3, 1.9, 2.2, 2.4, 2.6, 1.0)
_ON_THE_DAY = (3.0, 0.6, 0.3, 0.15, 0.1, 0.1, 0.1, 1.0)
_CATEGORIES: tuple[
    tuple[str, float, tuple[float, ...], tuple[float, ...], tuple[float, ...], tuple[float, ...]],
    ...,
] = (
    (
        "General Consultation Routine",
        25.93,
        _AGE_FLAT,
        (1, 1, 1, 0.1, 1),
        (2.2, 1, 1),
        (0.5, 1, 1.5, 1.6, 1.5, 1.4, 1, 1),
    ),
    (
        "General Consultation Acute",
        18.21,
        (1.8, 1.5, 1.2, 1.1, 1, 0.95, 0.9, 0.85, 0.85, 0.8),
        (1, 1.2, 1, 0.1, 1),
        (2.5, 1, 1),
        (2.2, 1.2, 0.6, 0.2, 0.1, 0.1, 0.1, 1),
    ),
    (
        "Planned Clinics",
        15.93,
        (0.9, 0.5, 0.5, 0.7, 0.8, 1, 1.2, 1.4, 1.4, 1.2),
        (2.5, 0.5, 0.3, 0.1, 1),
        (0.15, 1, 1),
        _BOOKED_AHEAD,
    ),
    (
        "Clinical Triage",
        10.93,
        (1.3, 1.2, 1.2, 1.1, 1, 1, 0.95, 0.9, 0.9, 0.9),
        (0.35, 2.5, 3.5, 0.05, 1),
        (1.2, 1, 1),
        (4, 0.4, 0.1, 0.05, 0.03, 0.03, 0.03, 1),
    ),
    (
        "Planned Clinical Procedure",
        10.79,
        _AGE_FLAT,
        (3, 0.2, 0.1, 0.2, 1),
        (0.12, 1, 1),
        _BOOKED_AHEAD,
    ),
    ("Inconsistent Mapping", 10.66, _AGE_FLAT, (1, 1, 1, 1, 1), (1, 1, 1), _ONES8),
    ("Unmapped", 1.66, _AGE_FLAT, (1, 1, 1, 1, 3), (0.8, 1, 3), (1, 1, 1, 1, 1, 1, 1, 5)),
    ("Unplanned Clinical Activity", 1.04, _AGE_FLAT, (1, 1, 1, 1, 1), (1, 1, 1), _ON_THE_DAY),
    (
        "Care Related Encounter but does not fit into any other category",
        0.97,
        _AGE_FLAT,
        (1, 1, 1, 1, 1),
        (0.8, 1, 1),
        _ONES8,
    ),
    (
        "Structured Medication Review",
        0.94,
        (0.05, 0.05, 0.1, 0.2, 0.4, 0.8, 1.3, 2, 2.2, 2),
        (0.7, 2.5, 1, 0.5, 1),
        (0.2, 1, 1),
        _BOOKED_AHEAD,
    ),
    ("Home Visit", 0.83, _AGE_HOUSEBOUND, (0.05, 0.05, 0.01, 300, 1), (3, 1, 1), _ON_THE_DAY),
    (
        "Patient contact during Care Home Round",
        0.68,
        _AGE_CARE_HOME,
        (0.5, 0.2, 0.1, 60, 1),
        (1.5, 1, 1),
        _BOOKED_AHEAD,
    ),
    ("Social Prescribing Service", 0.37, _AGE_FLAT, (1, 2, 1, 0.5, 1), (0.01, 1, 1), _BOOKED_AHEAD),
    (
        "Service provided by organisation external to the practice",
        0.36,
        _AGE_FLAT,
        (1, 1, 1, 1, 1),
        (0.3, 1, 1),
        _ONES8,
    ),
    ("Care Home Visit", 0.35, _AGE_CARE_HOME, (0.05, 0.05, 0.01, 300, 1), (2, 1, 1), _ONES8),
    (
        "Care Home Needs Assessment & Personalised Care and Support Planning",
        0.14,
        _AGE_CARE_HOME,
        (0.5, 0.3, 0.3, 30, 1),
        (0.5, 1, 1),
        _BOOKED_AHEAD,
    ),
    (
        "Walk-in",
        0.14,
        _AGE_FLAT,
        (20, 0.01, 0.01, 0.01, 1),
        (0.5, 1, 1),
        (50, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 1),
    ),
    (
        "Non-contractual chargeable work",
        0.04,
        _AGE_FLAT,
        (1, 1, 1, 1, 1),
        (1.5, 1, 1),
        _BOOKED_AHEAD,
    ),
    (
        "Group Consultation and Group Education",
        0.03,
        _AGE_FLAT,
        (2, 0.5, 2, 0.01, 1),
        (0.1, 1, 1),
        _BOOKED_AHEAD,
    ),
)
if tuple(c[0] for c in _CATEGORIES) != NATIONAL_CATEGORIES:
    raise RuntimeError("the model's category table must follow the published NATIONAL_CATEGORIES")
PLANNED_CLINICAL_PROCEDURE = NATIONAL_CATEGORIES.index("Planned Clinical Procedure")

_MODE_SHARES = np.array([63.77, 24.67, 7.86, 1.17, 2.52]) / 100
_VIDEO_FIRST_LAST = (0.0586, 0.0957)  # Dec 2024 and Nov 2025: online consultation grows
_HCP_SHARES = np.array([44.47, 53.18, 2.35]) / 100
_LEAD_SHARES = np.array([43.67, 7.40, 17.46, 12.69, 7.58, 5.22, 5.89, 0.08]) / 100
_SETTING_SHARES = np.array([90.40, 5.41, 1.20, 1.32, 1.66]) / 100

# Day of week relative to the weekday mean (S8, Mar-Apr 2026), bank holidays ~0.3%.
_WEEKDAY_RELATIVE = np.array([1.105, 1.047, 0.979, 0.964, 0.904, 0.045, 0.003])
_BANK_HOLIDAY_RELATIVE = 0.003
# Per-working-day volume relative to the 12-month mean, Dec 2024 .. Nov 2025 (S1).
_MONTH_RELATIVE = np.array(
    [0.955, 1.013, 1.001, 1.009, 0.988, 0.984, 0.982, 0.956, 0.919, 0.986, 1.156, 1.052]
)
OCTOBER = 10
"""Month index of October 2025 (0 = December 2024)."""

# Appointments per registered patient per year: relative rate by age band and sex.
_AGE_RATE_RELATIVE = np.array([1.35, 0.55, 0.7, 0.8, 0.85, 0.95, 1.1, 1.45, 1.95, 2.4])
_SEX_RATE_RELATIVE = np.array([1.15, 0.85])
MEAN_APPOINTMENTS_PER_PATIENT = 6.08
"""Mean before the 24-per-patient publish bound, which trims it to ~5.9 (AGP: 5.86)."""
APPOINTMENT_DISPERSION = 1.3
"""Negative binomial shape: most patients have few appointments, some very many."""

# The October vaccination season (Oct per working day 1.156, Planned Clinical Procedure
# 16.3%, face-to-face 67.3%, more than 28 days 10.4%, GP 40.9%): a share of October's
# appointments are booked-ahead clinics for older patients with practice staff.
_VACCINE_SHARE_OF_OCTOBER = 0.07
_VACCINE_AGE_RELATIVE = np.array([0.3, 0.3, 0.3, 0.4, 0.5, 0.7, 1.2, 2.5, 3.2, 3.0])
_VACCINE_MODE = np.array([0.97, 0.0, 0.0, 0.02, 0.01])
_VACCINE_HCP = np.array([0.05, 0.93, 0.02])
_VACCINE_LEAD = np.array([0.04, 0.02, 0.08, 0.08, 0.07, 0.07, 0.64, 0.0])

# Status. P(DNA) and P(Unknown) are products of relative factors times a base chosen so the
# pooled rates are AGP's (DNA 4.27%, Unknown 6.13%). Lead-time factors follow the published
# pre-2020 DNA gradient (1.9% same day .. 8.9% after 7 days); mode factors keep the PCN-system
# order face-to-face > telephone > video; Saturday DNA is about twice the weekday rate (S8).
DNA_BASE = 0.0404
UNKNOWN_STATUS_BASE = 0.0569
_DNA_LEAD = np.array([0.45, 1.2, 1.6, 2.0, 2.0, 2.1, 2.1, 1.5])
_DNA_MODE = np.array([1.0, 0.55, 0.25, 0.35, 1.0])
_DNA_AGE = np.array([1.1, 1.0, 1.5, 1.45, 1.2, 1.0, 0.85, 0.7, 0.7, 0.8])
_DNA_SATURDAY = 2.0
_DNA_MONTH = np.array([1.03, 0.96, 0.96, 0.96, 0.98, 0.97, 0.96, 0.99, 0.98, 0.99, 1.14, 1.02])
_UNKNOWN_LEAD = np.array([0.6, 1.1, 1.3, 1.5, 1.6, 1.7, 1.8, 1.5])
_UNKNOWN_MONTH = np.array([1.0] * 10 + [1.12, 1.0])
PRACTICE_DNA_SD = 0.25
"""Log-scale spread of a practice's DNA propensity (mean 1)."""
PRACTICE_UNKNOWN_SD = 0.35
"""Log-scale spread of a practice's unrecorded-status rate (data quality varies)."""

# Duration of attended appointments: ~24% have no usable duration; the known bands follow
# the 2022 national figures (S13), shorter by telephone, longer for home visits.
UNKNOWN_DURATION_SHARE = 0.24
_DURATION_KNOWN_SHARES = np.array([22.3, 26.7, 19.4, 12.9, 13.2, 5.5]) / 100
_DURATION_MODE_LEANING = np.array(
    [
        [0.8, 1.0, 1.15, 1.2, 1.2, 1.2],
        [1.6, 1.1, 0.7, 0.5, 0.4, 0.3],
        [1.3, 1.1, 0.9, 0.7, 0.6, 0.5],
        [0.1, 0.3, 0.8, 1.5, 2.5, 3.5],
        [1.0, 1.0, 1.0, 1.0, 1.0, 1.0],
    ]
)

# Service setting by day type: weekends and bank holidays are mostly extended access and
# PCN hubs; weekday shares are solved so the pooled shares are AGP's.
_WEEKEND_SETTING = np.array([0.15, 0.35, 0.45, 0.03, 0.02])
EXTENDED_ACCESS = SERVICE_SETTINGS.index("Extended Access Provision")

# Hour-of-day profiles (relative weights, hours 0..23).
_HOURS_WEEKDAY = {
    7: 1.0,
    8: 11,
    9: 14,
    10: 13.5,
    11: 12.5,
    12: 7,
    13: 5,
    14: 9,
    15: 10,
    16: 9,
    17: 5.5,
    18: 2,
    19: 0.8,
    20: 0.3,
}
_HOURS_EXTENDED_ACCESS = {7: 8.0, 8: 4, 18: 40, 19: 35, 20: 13}
_HOURS_WEEKEND = {8: 14.0, 9: 22, 10: 22, 11: 18, 12: 12, 13: 6, 14: 3, 15: 2, 16: 1}
HOUR_PROFILE_WEEKDAY, HOUR_PROFILE_EXTENDED_ACCESS, HOUR_PROFILE_WEEKEND = 0, 1, 2


@dataclass(frozen=True, slots=True)
class AppointmentModel:
    """Cumulative conditional tables, ready for `sample_rows` (see appointments.py).

    Each `*_cdf` has one row per conditioning state; its last column is 1.
    """

    day_cdf: Matrix
    """(1, days): day of the appointment."""
    rate: Matrix
    """(sex, age band): mean appointments per patient per year, before bounding."""
    vaccine_probability: Matrix
    """(month, age band): chance an appointment is an October vaccination clinic."""
    category_cdf: Matrix
    """(age band, category)."""
    mode_cdf: Matrix
    """(month * categories + category, mode); vaccine rows use state months*categories."""
    hcp_cdf: Matrix
    """(category, HCP type); vaccine rows use the last state."""
    lead_cdf: Matrix
    """(category, lead-time band); vaccine rows use the last state."""
    dna_lead: Matrix
    dna_mode: Matrix
    dna_age: Matrix
    dna_month: Matrix
    dna_saturday: float
    unknown_lead: Matrix
    unknown_month: Matrix
    duration_cdf: Matrix
    """(mode, duration band) for attended appointments."""
    setting_cdf: Matrix
    """(weekday or weekend/bank holiday, service setting)."""
    hour_cdf: Matrix
    """(hour profile, hour)."""


def fit_conditional(leaning: Matrix, parent: Matrix, target: Matrix) -> Matrix:
    """P(child | parent state) leaning as `leaning` says, with child marginal `target`.

    Iterative proportional fitting of the joint table parent x child: the result keeps the
    odds ratios of `leaning` while sum_s parent[s] * P(child | s) equals `target`.
    """
    joint = parent[:, None] * leaning / leaning.sum(axis=1, keepdims=True)
    for _ in range(200):
        joint *= target[None, :] / np.maximum(joint.sum(axis=0), 1e-300)[None, :]
        joint *= (parent / np.maximum(joint.sum(axis=1), 1e-300))[:, None]
    return np.asarray(joint / joint.sum(axis=1, keepdims=True), dtype=np.float64)


def cumulative(probabilities: Matrix) -> Matrix:
    """Row-wise CDF with the last column forced to exactly 1."""
    cdf = np.cumsum(probabilities / probabilities.sum(axis=1, keepdims=True), axis=1)
    cdf[:, -1] = 1.0
    return np.asarray(cdf, dtype=np.float64)


def day_weights() -> Matrix:
    """Relative expected volume of each day of the window."""
    calendar = window_calendar()
    weights = _WEEKDAY_RELATIVE[calendar.weekday] * _MONTH_RELATIVE[calendar.month_index]
    return np.asarray(
        np.where(calendar.is_bank_holiday, _BANK_HOLIDAY_RELATIVE, weights), dtype=np.float64
    )


def row_age_mix() -> Matrix:
    """Share of appointments by age band in England (rates x population, opt-outs removed)."""
    by_age = (AGE_SEX_SHARES * _rate_relative()).sum(axis=0) * (1 - opt_out_probability())
    return np.asarray(by_age / by_age.sum(), dtype=np.float64)


def _rate_relative() -> Matrix:
    return np.asarray(_SEX_RATE_RELATIVE[:, None] * _AGE_RATE_RELATIVE[None, :], np.float64)


def _hour_cdf(profile: dict[int, float]) -> Matrix:
    weights = np.zeros(24)
    for hour, weight in profile.items():
        weights[hour] = weight
    cdf: Matrix = cumulative(weights[None, :])[0]
    return cdf


def _weekday_setting_shares() -> Matrix:
    weights = day_weights()
    weekend = window_calendar().weekday >= 5
    weekend = weekend | window_calendar().is_bank_holiday
    weekend_share = float(weights[weekend].sum() / weights.sum())
    weekday = (_SETTING_SHARES - weekend_share * _WEEKEND_SETTING) / (1 - weekend_share)
    return np.asarray(weekday, dtype=np.float64)


@cache
def appointment_model() -> AppointmentModel:
    """The model's tables (built once from the constants above; immutable in use)."""
    categories = len(NATIONAL_CATEGORIES)
    category_share = np.array([c[1] for c in _CATEGORIES]) / 100
    category_share = category_share / category_share.sum()
    weights = day_weights()
    month_share = np.bincount(window_calendar().month_index, weights=weights) / weights.sum()
    vaccine_share = _VACCINE_SHARE_OF_OCTOBER * month_share[OCTOBER]
    # Categories of non-vaccine appointments, so that with the vaccine clinics added the
    # pooled Planned Clinical Procedure share is AGP's.
    base_share = category_share.copy()
    base_share[PLANNED_CLINICAL_PROCEDURE] -= vaccine_share
    base_share /= base_share.sum()
    age_mix = row_age_mix()
    category_leaning = np.array([c[2] for c in _CATEGORIES]).T  # (age, category)
    category_given_age = fit_conditional(category_leaning, age_mix, base_share)

    mode_leaning = np.array([c[3] for c in _CATEGORIES], dtype=np.float64)
    mode_tables = [
        fit_conditional(mode_leaning, base_share, _mode_target(month)) for month in range(12)
    ]
    mode_table = np.vstack([*mode_tables, _VACCINE_MODE[None, :]])
    hcp_leaning = np.array([c[4] for c in _CATEGORIES], dtype=np.float64)
    hcp_table = np.vstack(
        [fit_conditional(hcp_leaning, base_share, _HCP_SHARES), _VACCINE_HCP[None, :]]
    )
    lead_leaning = np.array([c[5] for c in _CATEGORIES], dtype=np.float64)
    lead_table = np.vstack(
        [fit_conditional(lead_leaning, base_share, _LEAD_SHARES), _VACCINE_LEAD[None, :]]
    )
    vaccine_by_age = _VACCINE_AGE_RELATIVE / float(age_mix @ _VACCINE_AGE_RELATIVE)
    vaccine_probability = np.zeros((12, len(AGE_BANDS)))
    vaccine_probability[OCTOBER] = _VACCINE_SHARE_OF_OCTOBER * vaccine_by_age

    rate = _rate_relative()
    rate = rate * MEAN_APPOINTMENTS_PER_PATIENT / float((AGE_SEX_SHARES * rate).sum())
    duration_known = fit_conditional(_DURATION_MODE_LEANING, _MODE_SHARES, _DURATION_KNOWN_SHARES)
    duration = np.hstack(
        [
            duration_known * (1 - UNKNOWN_DURATION_SHARE),
            np.full((len(MODES), 1), UNKNOWN_DURATION_SHARE),
        ]
    )
    assert categories == category_given_age.shape[1]
    return AppointmentModel(
        day_cdf=cumulative(weights[None, :])[0],
        rate=rate,
        vaccine_probability=vaccine_probability,
        category_cdf=cumulative(category_given_age),
        mode_cdf=cumulative(mode_table),
        hcp_cdf=cumulative(hcp_table),
        lead_cdf=cumulative(lead_table),
        dna_lead=_DNA_LEAD,
        dna_mode=_DNA_MODE,
        dna_age=_DNA_AGE,
        dna_month=_DNA_MONTH,
        dna_saturday=_DNA_SATURDAY,
        unknown_lead=_UNKNOWN_LEAD,
        unknown_month=_UNKNOWN_MONTH,
        duration_cdf=cumulative(duration),
        setting_cdf=cumulative(np.vstack([_weekday_setting_shares(), _WEEKEND_SETTING])),
        hour_cdf=np.vstack(
            [_hour_cdf(p) for p in (_HOURS_WEEKDAY, _HOURS_EXTENDED_ACCESS, _HOURS_WEEKEND)]
        ),
    )


def _mode_target(month: int) -> Matrix:
    """Mode shares of one month: video grows through the year at the others' expense."""
    first, last = _VIDEO_FIRST_LAST
    video = first + (last - first) * month / 11
    target = _MODE_SHARES.copy()
    rest = 1 - video - target[3] - target[4]
    scale = rest / (target[0] + target[1])
    target[0] *= scale
    target[1] *= scale
    target[2] = video
    return target

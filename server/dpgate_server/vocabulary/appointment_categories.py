"""The published category sets of the GP appointments dataset, and its band limits.

These are NHS England's public labels (Appointments in General Practice) and the
registered population's age bands and sexes. They are part of the dataset's schema, not
of any model: the store writes them as Parquet dictionaries, ingest maps a provider's raw
values onto them, the metadata lists them as public key sets and the synthetic generator
draws from them. Order matters: generated codes index these tuples.
"""

from __future__ import annotations

MODES: tuple[str, ...] = (
    "Face-to-Face",
    "Telephone",
    "Video Conference/Online",
    "Home Visit",
    "Unknown",
)
STATUSES: tuple[str, ...] = ("Attended", "DNA", "Unknown")
HCP_TYPES: tuple[str, ...] = ("GP", "Other Practice staff", "Unknown")
SERVICE_SETTINGS: tuple[str, ...] = (
    "General Practice",
    "Primary Care Network",
    "Extended Access Provision",
    "Other",
    "Unmapped",
)
DURATION_BANDS: tuple[str, ...] = (
    "1-5 Minutes",
    "6-10 Minutes",
    "11-15 Minutes",
    "16-20 Minutes",
    "21-30 Minutes",
    "31-60 Minutes",
    "Unknown / Data Quality",
)
DURATION_LIMITS: tuple[tuple[int, int], ...] = (
    (1, 5),
    (6, 10),
    (11, 15),
    (16, 20),
    (21, 30),
    (31, 60),
)
"""Inclusive minutes of each known duration band (the last band is the unknown one)."""
LEAD_TIME_BANDS: tuple[str, ...] = (
    "Same Day",
    "1 Day",
    "2 to 7 Days",
    "8 to 14 Days",
    "15 to 21 Days",
    "22 to 28 Days",
    "More than 28 Days",
    "Unknown / Data Quality",
)
LEAD_TIME_LIMITS: tuple[tuple[int, int], ...] = (
    (0, 0),
    (1, 1),
    (2, 7),
    (8, 14),
    (15, 21),
    (22, 28),
    (29, 90),
)
"""Inclusive days of each known lead-time band (the last band is the unknown one)."""
MAX_LEAD_TIME_DAYS = 90
"""Booking horizon (and the public clamp range of lead_time_days)."""
NATIONAL_CATEGORIES: tuple[str, ...] = (
    "General Consultation Routine",
    "General Consultation Acute",
    "Planned Clinics",
    "Clinical Triage",
    "Planned Clinical Procedure",
    "Inconsistent Mapping",
    "Unmapped",
    "Unplanned Clinical Activity",
    "Care Related Encounter but does not fit into any other category",
    "Structured Medication Review",
    "Home Visit",
    "Patient contact during Care Home Round",
    "Social Prescribing Service",
    "Service provided by organisation external to the practice",
    "Care Home Visit",
    "Care Home Needs Assessment & Personalised Care and Support Planning",
    "Walk-in",
    "Non-contractual chargeable work",
    "Group Consultation and Group Education",
)
"""NHS England's national appointment categories (19 labels)."""
AGE_BANDS: tuple[str, ...] = (
    "0-4",
    "5-14",
    "15-24",
    "25-34",
    "35-44",
    "45-54",
    "55-64",
    "65-74",
    "75-84",
    "85+",
)
SEXES: tuple[str, ...] = ("Female", "Male")

"""England's practices and their registered patients, as a deterministic synthetic model.

The practice table is *public* and fixed: it never depends on the generation seed, so the
public tables and metadata of a dataset version are the same whatever rows are drawn.
Practices sit in the real hierarchy (7 regions > 42 ICBs > 106 sub-ICB locations, with each
sub-ICB's real number of open practices, July 2025), are grouped into PCNs of about 45,000
patients, and carry list sizes whose quantiles are NHS England's for 1 November 2025
(median 8,803; quartiles 5,881 and 12,772; 95th percentile 22,025).

Patients are drawn per practice from the generation seed: sex and age band as England's
registered population (AGP_REFERENCE.md section 8), tilted a little older or younger per
practice, and a national data opt-out flag (5.4%, less common among children).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np
import numpy.typing as npt
import polars as pl

from dpgate_server.store.pseudonym import reserved_test_numbers, synthetic_identity
from dpgate_server.synthetic.england_geography import SUB_ICB_LOCATIONS
from dpgate_server.vocabulary.appointment_categories import AGE_BANDS

POPULATION_SEED = 20251101
"""Seed of the public practice table (list sizes, PCNs): part of the model, not of a run."""

_FEMALE_PERCENT = (2.21, 5.47, 5.96, 7.04, 7.13, 6.06, 6.26, 4.82, 3.64, 1.50)
_MALE_PERCENT = (2.33, 5.75, 6.14, 7.15, 7.31, 6.32, 6.28, 4.56, 3.09, 0.95)
AGE_SEX_SHARES: npt.NDArray[np.float64] = np.array([_FEMALE_PERCENT, _MALE_PERCENT]) / 100.49
"""England's registered patients by sex (rows) and age band (columns), summing to 1."""

OPT_OUT_RATE = 0.054
"""National data opt-out share of registered patients (NHS England, April 2023)."""
_OPT_OUT_AGE_RELATIVE = np.array([0.35, 0.35, 0.8, 1.35, 1.45, 1.2, 1.1, 0.95, 0.85, 0.8])

_AGE_TILT_SD = 0.12
"""Per-practice spread of the age mix (log-odds scale): some lists are older than others."""

# Practice list size quantiles, 1 Nov 2025 (S6): (cumulative share, list size).
# 1,000 / 20,000 / 30,000 come from the published counts below or above them.
_LIST_SIZE_QUANTILES = (
    (0.0, 250.0),
    (0.01, 842.0),
    (0.0103, 1_000.0),
    (0.05, 2_971.0),
    (0.25, 5_881.0),
    (0.5, 8_803.0),
    (0.75, 12_772.0),
    (0.932, 20_000.0),
    (0.95, 22_025.0),
    (0.98, 30_000.0),
    (0.99, 38_077.0),
    (0.998, 55_000.0),  # not published: keeps the mean at ~10.3k (published 10,314)
    (1.0, 103_158.0),
)
_PCN_TARGET_PATIENTS = 45_000
_REGION_LETTERS = {
    # One letter per region, ascending in hierarchy order, so that national order is also
    # the lexicographic order of practice codes ("sorted by practice" means both).
    "E40000003": "A",  # London
    "E40000005": "B",  # South East
    "E40000006": "C",  # South West
    "E40000007": "D",  # East of England
    "E40000010": "E",  # North West
    "E40000011": "F",  # Midlands
    "E40000012": "G",  # North East and Yorkshire
}
_PATIENTS_STREAM = 0


@dataclass(frozen=True, slots=True)
class PracticeTable:
    """Practices in hierarchy order (region, ICB, sub-ICB, PCN, practice).

    `index` is each practice's position in the national table; it seeds the practice's
    random streams, so a practice's patients and appointments are the same whichever
    other practices a run includes.
    """

    index: npt.NDArray[np.int64]
    practice_code: tuple[str, ...]
    pcn_code: tuple[str, ...]
    sub_icb_code: tuple[str, ...]
    icb_code: tuple[str, ...]
    region_code: tuple[str, ...]
    list_size: npt.NDArray[np.int64]
    first_patient: npt.NDArray[np.int64]
    """National serial number of each practice's first patient."""

    def __len__(self) -> int:
        return len(self.practice_code)

    def take(self, rows: npt.NDArray[np.int64]) -> PracticeTable:
        """The practices at positions `rows`, in that order."""
        pick = rows.tolist()
        return PracticeTable(
            index=self.index[rows],
            practice_code=tuple(self.practice_code[i] for i in pick),
            pcn_code=tuple(self.pcn_code[i] for i in pick),
            sub_icb_code=tuple(self.sub_icb_code[i] for i in pick),
            icb_code=tuple(self.icb_code[i] for i in pick),
            region_code=tuple(self.region_code[i] for i in pick),
            list_size=self.list_size[rows],
            first_patient=self.first_patient[rows],
        )

    def public_table(self) -> pl.DataFrame:
        """The public `practices` table."""
        return pl.DataFrame(
            {
                "practice_code": self.practice_code,
                "pcn_code": self.pcn_code,
                "sub_icb_code": self.sub_icb_code,
                "icb_code": self.icb_code,
                "region_code": self.region_code,
                "list_size": self.list_size,
            },
            schema={
                "practice_code": pl.String,
                "pcn_code": pl.String,
                "sub_icb_code": pl.String,
                "icb_code": pl.String,
                "region_code": pl.String,
                "list_size": pl.Int64,
            },
        )


@dataclass(frozen=True, slots=True)
class PracticePatients:
    """The registered patients of one practice (no appointment data).

    Attributes:
        sex: index into SEXES.
        age_band: index into AGE_BANDS.
        opted_out: on the national data opt-out list (excluded from every dataset version).
        nhs_number: a valid number from the reserved test range.
        cohort: which reuse of the test range the number belongs to (see pseudonym.py).
    """

    sex: npt.NDArray[np.int8]
    age_band: npt.NDArray[np.int8]
    opted_out: npt.NDArray[np.bool_]
    nhs_number: npt.NDArray[np.int64]
    cohort: npt.NDArray[np.int64]

    def identities(self, rows: npt.NDArray[np.int64]) -> list[str]:
        """The strings pseudonymised into `patient_key` for the patients at `rows`."""
        numbers, cohorts = self.nhs_number[rows].tolist(), self.cohort[rows].tolist()
        return [synthetic_identity(n, c) for n, c in zip(numbers, cohorts, strict=True)]


def list_size_quantile(u: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """List size at cumulative share `u`: log-linear between the published quantiles."""
    shares = np.array([q for q, _ in _LIST_SIZE_QUANTILES])
    logs = np.log([s for _, s in _LIST_SIZE_QUANTILES])
    return np.asarray(np.exp(np.interp(u, shares, logs)), dtype=np.float64)


@cache
def england_practices() -> PracticeTable:
    """All ~6,200 practices of the model (built once; it is immutable)."""
    rng = np.random.default_rng(POPULATION_SEED)
    counts = np.array([loc.open_practices for loc in SUB_ICB_LOCATIONS])
    total = int(counts.sum())
    sizes = np.rint(list_size_quantile((np.arange(total) + 0.5) / total)).astype(np.int64)
    sizes = rng.permutation(sizes)
    codes: list[str] = []
    pcns: list[str] = []
    sub_icbs: list[str] = []
    icbs: list[str] = []
    regions: list[str] = []
    serial_in_region: dict[str, int] = {}
    position = 0
    for location in SUB_ICB_LOCATIONS:
        here = sizes[position : position + location.open_practices]
        first_pcn = 10_001 + len(set(pcns))
        pcns.extend(f"U{first_pcn + p:05d}" for p in _pcn_groups(here))
        for _ in range(location.open_practices):
            serial = serial_in_region.get(location.region_code, 0) + 1
            serial_in_region[location.region_code] = serial
            codes.append(f"{_REGION_LETTERS[location.region_code]}{81_000 + serial:05d}")
        sub_icbs.extend([location.sub_icb_code] * location.open_practices)
        icbs.extend([location.icb_code] * location.open_practices)
        regions.extend([location.region_code] * location.open_practices)
        position += location.open_practices
    first_patient = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    return PracticeTable(
        index=np.arange(total, dtype=np.int64),
        practice_code=tuple(codes),
        pcn_code=tuple(pcns),
        sub_icb_code=tuple(sub_icbs),
        icb_code=tuple(icbs),
        region_code=tuple(regions),
        list_size=sizes,
        first_patient=first_patient,
    )


def _pcn_groups(sizes: npt.NDArray[np.int64]) -> list[int]:
    """PCN number (0, 1, ...) of each consecutive practice of a sub-ICB, ~45k patients each."""
    groups: list[int] = []
    group, patients = 0, 0
    for size in sizes.tolist():
        if patients >= _PCN_TARGET_PATIENTS:
            group, patients = group + 1, 0
        groups.append(group)
        patients += size
    if group > 0 and patients < _PCN_TARGET_PATIENTS // 2:  # fold a small tail into its neighbour
        groups = [min(g, group - 1) for g in groups]
    return groups


def select_practices(practices: int | None) -> PracticeTable:
    """`practices` whole practices forming a contiguous block of the hierarchy.

    The block starts at the first practice of the smallest ICB that holds at least that many
    practices, so ~150 practices is about one ICB and 10 practices share a sub-ICB. None or a
    number larger than any ICB takes practices from the start of the national order (None:
    all of them).
    """
    table = england_practices()
    if practices is None:
        return table
    if not 1 <= practices <= len(table):
        raise ValueError(f"practices must be between 1 and {len(table)}, got {practices}")
    icb_sizes: dict[str, int] = {}
    icb_start: dict[str, int] = {}
    for position, icb in enumerate(table.icb_code):
        icb_sizes[icb] = icb_sizes.get(icb, 0) + 1
        icb_start.setdefault(icb, position)
    fitting = [(size, icb_start[icb]) for icb, size in icb_sizes.items() if size >= practices]
    start = min(fitting)[1] if fitting else 0
    return table.take(np.arange(start, start + practices, dtype=np.int64))


def draw_patients(
    seed: int, practice_index: int, list_size: int, first_patient: int
) -> PracticePatients:
    """The registered patients of one practice, from its own random stream."""
    rng = np.random.default_rng([seed, practice_index, _PATIENTS_STREAM])
    shares = _tilted_age_sex_shares(rng.normal(0.0, _AGE_TILT_SD))
    cell = rng.choice(shares.size, size=list_size, p=shares.ravel())
    sex = (cell // len(AGE_BANDS)).astype(np.int8)
    age_band = (cell % len(AGE_BANDS)).astype(np.int8)
    opted_out = rng.random(list_size) < opt_out_probability()[age_band]
    numbers = reserved_test_numbers()
    order = _test_number_order(seed)
    serial = first_patient + np.arange(list_size, dtype=np.int64)
    return PracticePatients(
        sex=sex,
        age_band=age_band,
        opted_out=opted_out,
        nhs_number=numbers[order[serial % numbers.size]],
        cohort=serial // numbers.size,
    )


def _tilted_age_sex_shares(tilt: float) -> npt.NDArray[np.float64]:
    """England's age-sex mix, older (tilt > 0) or younger (tilt < 0) for one practice."""
    position = np.linspace(-1.0, 1.0, len(AGE_BANDS))
    weights = AGE_SEX_SHARES * np.exp(tilt * position)[None, :]
    return np.asarray(weights / weights.sum(), dtype=np.float64)


@cache
def opt_out_probability() -> npt.NDArray[np.float64]:
    """Chance of being opted out, by age band, averaging OPT_OUT_RATE over England."""
    age_shares = AGE_SEX_SHARES.sum(axis=0)
    relative = _OPT_OUT_AGE_RELATIVE / float(age_shares @ _OPT_OUT_AGE_RELATIVE)
    return np.asarray(OPT_OUT_RATE * relative, dtype=np.float64)


@cache
def _test_number_order(seed: int) -> npt.NDArray[np.int64]:
    """A seed's shuffle of the test-range numbers: patient serial s gets number order[s % n]."""
    rng = np.random.default_rng([seed, 2**31 - 1])
    return rng.permutation(reserved_test_numbers().size).astype(np.int64)

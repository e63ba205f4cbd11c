"""The public practice table and the registered patients (checklist: Practices, Patients)."""

from __future__ import annotations

import re
from itertools import pairwise

import numpy as np

from dpgate_server.synthetic.agp_checklist import practice_figures
from dpgate_server.synthetic.population import (
    AGE_SEX_SHARES,
    draw_patients,
    england_practices,
    opt_out_probability,
    select_practices,
)


def test_england_has_about_6200_practices_in_the_real_hierarchy() -> None:
    figures = practice_figures()
    assert abs(figures.practices - 6_200) <= 100
    assert (figures.sub_icbs, figures.icbs, figures.regions) == (106, 42, 7)


def test_list_sizes_match_published_quantiles() -> None:
    figures = practice_figures()
    assert abs(figures.list_size_median - 8_800) <= 500
    assert abs(figures.list_size_q1 - 5_900) <= 500
    assert abs(figures.list_size_q3 - 12_800) <= 500
    assert abs(figures.list_size_p95 - 22_000) <= 2_000


def test_practice_codes_are_unique_ods_style_and_in_hierarchy_order() -> None:
    codes = england_practices().practice_code
    assert all(re.fullmatch(r"[A-Z]\d{5}", c) for c in codes)
    assert len(set(codes)) == len(codes)
    assert list(codes) == sorted(codes)


def test_hierarchy_nests_each_level_in_one_parent() -> None:
    table = england_practices()
    levels = [table.pcn_code, table.sub_icb_code, table.icb_code, table.region_code]
    for child, parent in pairwise(levels):
        parents: dict[str, set[str]] = {}
        for c, p in zip(child, parent, strict=True):
            parents.setdefault(c, set()).add(p)
        assert all(len(p) == 1 for p in parents.values())


def test_pcns_serve_tens_of_thousands_of_patients() -> None:
    table = england_practices()
    patients: dict[str, int] = {}
    for pcn, size in zip(table.pcn_code, table.list_size.tolist(), strict=True):
        patients[pcn] = patients.get(pcn, 0) + size
    median = float(np.median(list(patients.values())))
    assert 30_000 <= median <= 80_000


def test_demo_scale_is_about_one_icb() -> None:
    chosen = select_practices(150)
    assert len(chosen) == 150
    assert len(set(chosen.icb_code)) == 1


def test_small_scale_is_a_contiguous_block() -> None:
    chosen = select_practices(10)
    positions = chosen.index.tolist()
    assert positions == list(range(positions[0], positions[0] + 10))
    assert len(set(chosen.sub_icb_code)) == 1


def test_none_selects_every_practice() -> None:
    assert len(select_practices(None)) == len(england_practices())


def test_patients_of_a_practice_do_not_depend_on_other_practices() -> None:
    table = england_practices()
    first = draw_patients(7, 42, int(table.list_size[42]), int(table.first_patient[42]))
    again = draw_patients(7, 42, int(table.list_size[42]), int(table.first_patient[42]))
    assert np.array_equal(first.nhs_number, again.nhs_number)
    assert np.array_equal(first.age_band, again.age_band)


def test_nhs_numbers_of_a_cohort_are_distinct_across_practices() -> None:
    table = select_practices(20)
    numbers = np.concatenate(
        [
            draw_patients(7, int(i), int(s), int(f)).nhs_number
            for i, s, f in zip(table.index, table.list_size, table.first_patient, strict=True)
        ]
    )
    assert np.unique(numbers).size == numbers.size


def test_opt_out_probability_averages_5_4_percent() -> None:
    assert abs(float(AGE_SEX_SHARES.sum(axis=0) @ opt_out_probability()) - 0.054) < 1e-9

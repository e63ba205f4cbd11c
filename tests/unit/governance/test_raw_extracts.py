"""The synthetic raw extracts and opt-out lists: what a supplier would send."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import polars as pl

from dpgate_server.governance import extract_format as fmt
from dpgate_server.store.pseudonym import TEST_RANGE_FIRST
from dpgate_server.synthetic.population import draw_patients, select_practices
from dpgate_server.synthetic.raw_extracts import (
    EXTRA_COLUMN,
    opt_out_numbers,
    practice_extract,
    write_extract,
)
from dpgate_server.vocabulary.nhs_number import is_valid_nhs_number
from tests.unit.governance.helpers import PRACTICES, SEED, SMALL, World


def small_position() -> int:
    return select_practices(PRACTICES).practice_code.index(SMALL)


def read(world: World) -> pl.DataFrame:
    return pl.read_csv(io.BytesIO(world.extract(SMALL)), infer_schema=False)


def test_extract_has_the_declared_columns_and_a_supplier_column(governance_world: World) -> None:
    assert read(governance_world).columns == [EXTRA_COLUMN, *fmt.RAW_COLUMNS]


def test_nhs_numbers_are_valid_and_in_the_reserved_test_range(governance_world: World) -> None:
    numbers = read(governance_world)[fmt.NHS_NUMBER].unique().to_list()
    assert all(is_valid_nhs_number(n) and int(n) >= TEST_RANGE_FIRST for n in numbers)


def test_extract_includes_opted_out_patients(governance_world: World) -> None:
    national, _ = opt_out_numbers(select_practices(PRACTICES), SEED)
    assert set(read(governance_world)[fmt.NHS_NUMBER].to_list()) & set(national)


def test_national_list_is_the_models_opt_out_flag() -> None:
    table = select_practices(PRACTICES)
    national, _ = opt_out_numbers(table, SEED)
    position = small_position()
    patients = draw_patients(
        SEED,
        int(table.index[position]),
        int(table.list_size[position]),
        int(table.first_patient[position]),
    )
    flagged = {f"{n:010d}" for n in patients.nhs_number[patients.opted_out].tolist()}
    assert flagged <= set(national)
    assert not {f"{n:010d}" for n in patients.nhs_number[~patients.opted_out].tolist()} & set(
        national
    )


def test_some_patients_exceed_the_contribution_bound(governance_world: World) -> None:
    per_patient = read(governance_world).group_by(fmt.NHS_NUMBER).len()["len"]
    assert per_patient.max() > 24  # a supplier's export is not cut per patient


def test_booking_never_follows_the_appointment(governance_world: World) -> None:
    frame = read(governance_world).with_columns(
        pl.col(fmt.APPOINTMENT_DATETIME, fmt.BOOKED_DATETIME).str.to_datetime(fmt.DATETIME_FORMAT)
    )
    later = frame.filter(pl.col(fmt.BOOKED_DATETIME) > pl.col(fmt.APPOINTMENT_DATETIME))
    assert later.height == 0
    assert frame[fmt.BOOKED_DATETIME].null_count() < frame.height * 0.01


def test_same_seed_gives_the_same_bytes(tmp_path: Path, governance_world: World) -> None:
    table = select_practices(PRACTICES)
    write_extract(practice_extract(table, small_position(), SEED), tmp_path / "again.csv")
    assert (tmp_path / "again.csv").read_bytes() == governance_world.extract(SMALL)


def test_dates_of_birth_keep_each_patient_in_one_age_band(governance_world: World) -> None:
    frame = read(governance_world)
    ages = frame.select(
        pl.col(fmt.NHS_NUMBER),
        (
            pl.col(fmt.APPOINTMENT_DATETIME).str.to_datetime(fmt.DATETIME_FORMAT).dt.date()
            - pl.col(fmt.DATE_OF_BIRTH).str.to_date()
        )
        .dt.total_days()
        .alias("days"),
    )
    assert ages["days"].min() >= 0
    bands = np.digitize(ages["days"].to_numpy() / 365.25, [5, 15, 25, 35, 45, 55, 65, 75, 85])
    per_patient = (
        ages.with_columns(band=pl.Series(bands))
        .group_by(fmt.NHS_NUMBER)
        .agg(pl.col("band").n_unique())
    )
    # Approximate years (365.25 days) can straddle a band edge only within a day or two.
    assert (per_patient["band"] > 1).mean() < 0.01


def test_postcodes_are_full_postcodes_of_one_area_and_one_per_patient(
    governance_world: World,
) -> None:
    frame = read(governance_world)
    postcodes = frame[fmt.POSTCODE]
    assert postcodes.str.contains(r"^[A-Z]{2}[0-9]{1,2} [0-9][ABD-HJLNP-UW-Z]{2}$").all()
    assert postcodes.str.slice(0, 2).n_unique() == 1
    assert (
        frame.group_by(fmt.NHS_NUMBER).agg(pl.col(fmt.POSTCODE).n_unique())[fmt.POSTCODE] == 1
    ).all()

"""The default expected cell value of a question set's query, from public list sizes."""

from __future__ import annotations

import polars as pl
import pytest

from dpgate import count, total
from dpgate.expected_cells import expected_cell_value

PRACTICES = pl.DataFrame(
    {
        "practice_code": ["A1", "A2", "A3", "A4"],
        "icb_code": ["Q1", "Q1", "Q1", "Q2"],
        "list_size": [2_000, 6_000, 10_000, 30_000],
    }
)
KEYS = {"month": tuple(range(1, 13)), "mode": ("Face-to-Face", "Telephone", "Video")}


def test_per_practice_a_cell_covers_the_median_practice() -> None:
    assert expected_cell_value(count("gp").by("practice_code"), PRACTICES, KEYS) == 8_000


def test_without_a_practice_grouping_a_cell_covers_every_practice_kept() -> None:
    query = count("gp").where_in("practice_code", ["A1", "A2"])
    assert expected_cell_value(query, PRACTICES, KEYS) == 8_000


def test_grouped_by_a_coarser_practice_column_a_cell_covers_the_median_group() -> None:
    # ICB Q1 has 18,000 registered patients, Q2 30,000: the median cell covers 24,000.
    assert expected_cell_value(count("gp").by("icb_code"), PRACTICES, KEYS) == 24_000


def test_other_group_by_keys_share_the_population_evenly() -> None:
    query = count("gp").where(icb_code="Q1").by("practice_code", "month")
    assert expected_cell_value(query, PRACTICES, KEYS) == pytest.approx(6_000 / 12)


def test_conditions_on_another_grouped_column_keep_only_its_matching_keys() -> None:
    query = count("gp").where("month", "<=", 3).where("mode", "!=", "Video").by("month", "mode")
    assert expected_cell_value(query, PRACTICES, KEYS) == pytest.approx(48_000 / (3 * 2))


def test_a_condition_on_a_column_not_grouped_is_ignored() -> None:
    query = count("gp").where(mode="Telephone")
    assert expected_cell_value(query, PRACTICES, KEYS) == 48_000


@pytest.mark.parametrize(
    ("query", "practices"),
    [
        (total("gp", "duration_minutes").by("practice_code"), PRACTICES),
        (count("gp").by("practice_code"), PRACTICES.drop("list_size")),
        (count("gp").where(practice_code="Z9"), PRACTICES),
        (count("gp").by("week"), PRACTICES),
    ],
    ids=["a sum", "no list sizes", "no practice kept", "a grouping without public keys"],
)
def test_there_is_no_default_for(query: object, practices: pl.DataFrame) -> None:
    assert expected_cell_value(query, practices, KEYS) is None  # type: ignore[arg-type]

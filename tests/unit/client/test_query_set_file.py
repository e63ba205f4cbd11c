"""Reading a question set's file (TOML or JSON) into `dpgate query` options."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
import typer

from dpgate.cli._query_set_file import read_query_set


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_toml_amounts_are_exact_and_options_take_both_list_and_comma_forms(
    tmp_path: Path,
) -> None:
    path = write(
        tmp_path,
        "set.toml",
        'dataset = "gp"\n'
        '[[query]]\nby = ["practice_code", "week"]\nepsilon = 0.1\nexpected = 1_200\n'
        '[[query]]\ndataset = "other"\nsum = "duration_minutes"\nwhere = "status=DNA"\n'
        'by = "icb_code,month"\nrho = 0.05\nconfidence = 0.9\ncontributions = 12\n',
    )
    first, second = read_query_set(path)
    assert first.options.dataset_id == "gp"
    assert first.options.group_by == ("practice_code", "week")
    assert first.options.epsilon == Decimal("0.1")
    assert str(first.options.epsilon) == "0.1"  # not a float's neighbour
    assert first.options.count
    assert first.expected == 1_200
    assert second.options.dataset_id == "other"
    assert second.options.sum_column == "duration_minutes"
    assert second.options.group_by == ("icb_code", "month")
    assert [(w.column, w.op, w.texts) for w in second.options.where] == [("status", "=", ("DNA",))]
    assert second.options.rho == Decimal("0.05")
    assert (second.options.confidence, second.options.contributions) == (0.9, 12)
    assert second.expected is None


def test_json_is_a_list_of_queries_or_an_object_holding_them(tmp_path: Path) -> None:
    listed = write(tmp_path, "a.json", '[{"dataset": "gp", "by": "mode", "epsilon": 0.3}]')
    held = write(tmp_path, "b.json", '{"dataset": "gp", "query": [{"by": "mode", "epsilon": 0.3}]}')
    assert read_query_set(listed) == read_query_set(held)
    assert read_query_set(listed)[0].options.epsilon == Decimal("0.3")


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("[[query]]\nepsilon = 0.1\n", "query 1: name its `dataset`"),
        ('dataset = "gp"\n[[query]]\nepsilon = 0.1\nrho = 0.1\n', "exactly one of epsilon"),
        ('dataset = "gp"\n[[query]]\nepsilon = 0.1\nby = 3\n', "`by` must be text"),
        ('dataset = "gp"\n[[query]]\nepsilon = 0.1\nexpected = -4\n', "`expected` must be"),
        ('dataset = "gp"\n[[query]]\nepsilon = 0.1\nconfidence = 95\n', "query 1:"),
        ('dataset = "gp"\n[[query]]\nepsilon = 0.1\nwhere = "status"\n', "is not a condition"),
        ('dataset = "gp"\n', "holds no query"),
        ('datasets = "gp"\n', "unknown top-level key(s) datasets"),
        ("[[query]\n", "is not valid TOML"),
    ],
)
def test_a_wrong_file_is_a_usage_error_that_says_what_to_change(
    tmp_path: Path, text: str, says: str
) -> None:
    with pytest.raises(typer.BadParameter, match=None) as raised:
        read_query_set(write(tmp_path, "set.toml", text))
    assert says in raised.value.message

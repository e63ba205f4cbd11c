"""`dpgate query-set preview|run FILE` against the shared CLI server."""

from __future__ import annotations

import statistics
from decimal import Decimal
from pathlib import Path

import pytest

from dpgate import Client
from tests.integration.cli.helpers import CliService, as_json, dpgate, error_of

PER_PRACTICE_WEEK_AND_MONTHLY = """
dataset = "gp_appointments"

[[query]]
by = ["practice_code", "week"]
epsilon = 0.2

[[query]]
count = true
by = "month"
epsilon = 0.1
"""


def remaining(service: CliService) -> Decimal:
    budgets = as_json(dpgate(service, service.tokens["analyst"], "budget", "--json"))
    return Decimal(budgets[0]["remaining"])


@pytest.fixture
def two_counts(tmp_path: Path) -> Path:
    path = tmp_path / "set.toml"
    path.write_text(PER_PRACTICE_WEEK_AND_MONTHLY)
    return path


def test_preview_gives_the_total_each_interval_and_a_split_that_equalises_relative_widths(
    cli_service: CliService, two_counts: Path
) -> None:
    before = remaining(cli_service)
    preview = as_json(
        dpgate(
            cli_service, cli_service.tokens["analyst"],
            "query-set", "preview", str(two_counts), "--total", "0.3", "--json",
        )
    )  # fmt: skip
    assert remaining(cli_service) == before  # free
    assert Decimal(preview["stated_total"]) == Decimal("0.3")
    members = preview["members"]
    assert [Decimal(m["stated"]["spend"]) for m in members] == [Decimal("0.2"), Decimal("0.1")]
    assert members[1]["stated"]["cells"] == 12
    splits = [Decimal(m["split"]["spend"]) for m in members]
    assert sum(splits) == Decimal("0.3")
    relative = [m["split"]["half_width"] / m["expected"] for m in members]
    assert relative[0] == pytest.approx(relative[1], rel=0.02)
    assert relative[0] == pytest.approx(preview["split_relative_half_width"], rel=0.02)
    # The per-practice-week cells are far smaller, so they get most of the total.
    assert splits[0] > 10 * splits[1]


def test_without_expected_values_a_count_expects_its_cells_registered_patients(
    cli_service: CliService, two_counts: Path
) -> None:
    preview = as_json(
        dpgate(
            cli_service, cli_service.tokens["analyst"],
            "query-set", "preview", str(two_counts), "--json",
        )
    )  # fmt: skip
    with Client(cli_service.target, token=cli_service.tokens["analyst"]) as client:
        sizes = client.public_table(cli_service.dataset_id, "practices")["list_size"].to_list()
        weeks = len(client.describe(cli_service.dataset_id).column("week").values)
    per_practice_week, monthly = (m["expected"] for m in preview["members"])
    assert [m["expected_source"] for m in preview["members"]] == ["list sizes", "list sizes"]
    assert per_practice_week == pytest.approx(statistics.median(sizes) / weeks)
    assert monthly == pytest.approx(sum(sizes) / 12)
    assert preview["members"][0]["split"] is None


def test_preview_table_shows_the_split_and_says_nothing_was_spent(
    cli_service: CliService, two_counts: Path
) -> None:
    result = dpgate(
        cli_service, cli_service.tokens["analyst"],
        "query-set", "preview", str(two_counts), "--total", "0.3",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "count of gp_appointments by practice_code, week" in result.stdout
    assert "as stated: epsilon 0.3 in all" in result.stdout
    assert "split of epsilon 0.3: every query +/-" in result.stdout
    assert "(list sizes)" in result.stdout
    assert "nothing was spent" in result.stdout


def test_run_charges_the_sum_once_and_a_retry_with_its_key_replays_the_answers(
    cli_service: CliService, tmp_path: Path
) -> None:
    path = tmp_path / "set.json"
    path.write_text(
        '[{"dataset": "gp_appointments", "by": "mode", "where": ["status=DNA"],'
        ' "epsilon": 0.0123},'
        ' {"dataset": "gp_appointments", "sum": "duration_minutes", "by": ["month"],'
        ' "epsilon": "0.0124"}]'
    )
    args = ("query-set", "run", str(path), "--idempotency-key", "set-cli-1", "--json")
    before = remaining(cli_service)
    first = as_json(dpgate(cli_service, cli_service.tokens["analyst"], *args))
    assert Decimal(first["charged"]) == Decimal("0.0247")
    assert remaining(cli_service) == before - Decimal("0.0247")
    assert Decimal(first["remaining"][cli_service.dataset_id]) == before - Decimal("0.0247")
    assert [len(m["cells"]) for m in first["members"]] == [5, 12]
    assert not any(m["repeat"] for m in first["members"])

    again = as_json(dpgate(cli_service, cli_service.tokens["analyst"], *args))
    assert remaining(cli_service) == before - Decimal("0.0247")  # charged once
    assert [m["release_id"] for m in again["members"]] == [
        m["release_id"] for m in first["members"]
    ]
    assert again["members"][0]["cells"] == first["members"][0]["cells"]


def test_run_table_shows_the_charge_and_the_key_to_retry_with(
    cli_service: CliService, tmp_path: Path
) -> None:
    path = tmp_path / "set.toml"
    path.write_text('[[query]]\ndataset = "gp_appointments"\nby = "sex"\nepsilon = "0.0125"\n')
    result = dpgate(cli_service, cli_service.tokens["analyst"], "query-set", "run", str(path))
    assert result.exit_code == 0, result.output
    assert "charged epsilon 0.0125 in all" in result.stdout
    assert "--idempotency-key" in result.stdout


def test_an_unknown_key_in_the_file_is_a_usage_error_naming_the_query(
    cli_service: CliService, tmp_path: Path
) -> None:
    path = tmp_path / "set.toml"
    path.write_text(PER_PRACTICE_WEEK_AND_MONTHLY + '\n[[query]]\ngroup_by = "week"\n')
    before = remaining(cli_service)
    result = dpgate(cli_service, cli_service.tokens["analyst"], "query-set", "run", str(path))
    assert result.exit_code == 2
    assert "query 3: unknown key(s) group_by" in result.output
    assert remaining(cli_service) == before


def test_a_split_with_a_sum_and_no_expected_value_asks_for_one(
    cli_service: CliService, tmp_path: Path
) -> None:
    path = tmp_path / "set.toml"
    path.write_text(PER_PRACTICE_WEEK_AND_MONTHLY + '\n[[query]]\nsum = "duration_minutes"\n'
                    'epsilon = 0.1\n')  # fmt: skip
    result = dpgate(
        cli_service, cli_service.tokens["analyst"],
        "query-set", "preview", str(path), "--total", "0.5", "--json",
    )  # fmt: skip
    assert result.exit_code == 2
    assert "give `expected`" in error_of(result)["message"]
    assert "query 3" in error_of(result)["message"]

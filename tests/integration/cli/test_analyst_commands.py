"""`dpgate` analyst commands against a real server: happy paths, errors and exit codes."""

from __future__ import annotations

import csv
from decimal import Decimal
from pathlib import Path

from tests.integration.cli.helpers import CliService, as_json, dpgate, error_of

MONTHS = 12


def remaining(service: CliService, account: str = "analyst") -> Decimal:
    budgets = as_json(dpgate(service, service.tokens[account], "budget", "--json"))
    return Decimal(budgets[0]["remaining"])


def test_datasets_lists_the_dataset(cli_service: CliService) -> None:
    found = as_json(dpgate(cli_service, cli_service.tokens["analyst"], "datasets", "--json"))
    assert [d["dataset_id"] for d in found] == [cli_service.dataset_id]
    assert found[0]["accounting"] == "pure_dp"


def test_datasets_table_names_the_dataset(cli_service: CliService) -> None:
    result = dpgate(cli_service, cli_service.tokens["analyst"], "datasets")
    assert result.exit_code == 0
    assert cli_service.dataset_id in result.stdout


def test_json_given_before_the_command_works_too(cli_service: CliService) -> None:
    found = as_json(dpgate(cli_service, cli_service.tokens["analyst"], "--json", "datasets"))
    assert found[0]["dataset_id"] == cli_service.dataset_id


def test_describe_lists_columns_with_their_public_values(cli_service: CliService) -> None:
    description = as_json(
        dpgate(cli_service, cli_service.tokens["analyst"], "describe", "gp_appointments", "--json")
    )
    columns = {c["name"]: c for c in description["columns"]}
    assert columns["status"]["values"] == ["Attended", "DNA", "Unknown"]
    assert columns["patient_key"]["public"] is False


def test_describe_table_shows_columns(cli_service: CliService) -> None:
    result = dpgate(cli_service, cli_service.tokens["analyst"], "describe", "gp_appointments")
    assert result.exit_code == 0
    assert "duration_minutes" in result.stdout
    assert "0 to 60" in result.stdout


def test_describe_shows_the_bounds_costs_are_computed_from(cli_service: CliService) -> None:
    description = as_json(
        dpgate(cli_service, cli_service.tokens["analyst"], "describe", "gp_appointments", "--json")
    )
    assert description["bounds"]["max_contributions"] == 24
    assert description["bounds"]["verified"] is True
    text = dpgate(cli_service, cli_service.tokens["analyst"], "describe", "gp_appointments")
    assert "cut and verified at publish" in text.stdout
    assert "at most 24 rows per patient (K)" in text.stdout


def test_describe_unknown_dataset_exits_5(cli_service: CliService) -> None:
    result = dpgate(cli_service, cli_service.tokens["analyst"], "describe", "no_such_dataset")
    assert result.exit_code == 5
    assert "no_such_dataset" in result.stderr
    assert "Traceback" not in result.output


def test_preview_shows_the_spend_and_charges_nothing(cli_service: CliService) -> None:
    before = remaining(cli_service)
    preview = as_json(
        dpgate(
            cli_service, cli_service.tokens["analyst"], "preview", "gp_appointments",
            "--count", "--by", "month", "--epsilon", "0.25", "--json",
        )
    )  # fmt: skip
    assert Decimal(preview["spend"]) == Decimal("0.25")
    assert preview["cells"] == MONTHS
    assert remaining(cli_service) == before


def test_preview_table_says_it_was_free(cli_service: CliService) -> None:
    result = dpgate(
        cli_service, cli_service.tokens["analyst"], "preview", "gp_appointments",
        "--sum", "duration_minutes", "--by", "mode", "--accuracy", "2000",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "nothing was spent" in result.stdout


def test_query_without_a_spend_is_a_usage_error(cli_service: CliService) -> None:
    result = dpgate(cli_service, cli_service.tokens["analyst"], "query", "gp_appointments")
    assert result.exit_code == 2
    assert "--epsilon" in result.output


def test_query_with_count_and_sum_is_a_usage_error(cli_service: CliService) -> None:
    result = dpgate(
        cli_service, cli_service.tokens["analyst"], "query", "gp_appointments",
        "--count", "--sum", "duration_minutes", "--epsilon", "0.1",
    )  # fmt: skip
    assert result.exit_code == 2


def test_query_prints_cells_with_intervals_charge_and_remaining(cli_service: CliService) -> None:
    result = dpgate(
        cli_service, cli_service.tokens["analyst"], "query", "gp_appointments",
        "--count", "--where", "status=DNA", "--by", "month", "--epsilon", "0.31",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "2025-01" in result.stdout
    assert "low" in result.stdout
    assert "high" in result.stdout
    assert "charged epsilon 0.31" in result.stdout
    assert "remaining epsilon" in result.stdout


def test_query_json_has_every_cell_and_the_bill(cli_service: CliService) -> None:
    before = remaining(cli_service)
    answer = as_json(
        dpgate(
            cli_service, cli_service.tokens["analyst"], "query", "gp_appointments",
            "--count", "--by", "month", "--epsilon", "0.32", "--json",
        )
    )  # fmt: skip
    assert len(answer["cells"]) == MONTHS
    cell = answer["cells"][0]
    assert cell["ci_low"] <= cell["value"] <= cell["ci_high"]
    assert Decimal(answer["charged"]) == Decimal("0.32")
    assert Decimal(answer["remaining"]) == before - Decimal("0.32")
    assert answer["repeat"] is False


def test_repeat_query_is_free_and_says_so(cli_service: CliService) -> None:
    args = ("query", "gp_appointments", "--count", "--by", "weekday", "--epsilon", "0.33")
    first = as_json(dpgate(cli_service, cli_service.tokens["analyst"], *args, "--json"))
    again = dpgate(cli_service, cli_service.tokens["analyst"], *args)
    assert again.exit_code == 0
    assert f"free: a repeat of release {first['release_id']}" in again.stdout


def test_where_forms_reach_the_server_typed(cli_service: CliService) -> None:
    answer = as_json(
        dpgate(
            cli_service, cli_service.tokens["analyst"], "query", "gp_appointments",
            "--sum", "duration_minutes", "--where", "hour>=18",
            "--where", "mode:in:Telephone,Home Visit", "--where", "appointment_date<2025-06-01",
            "--by", "mode", "--epsilon", "0.34", "--json",
        )
    )  # fmt: skip
    assert sorted(c["mode"] for c in answer["cells"]) == ["Home Visit", "Telephone"]
    canonical = answer["canonical_query"]
    assert '"op":">=","values":[18]' in canonical
    assert '"column":"appointment_date","op":"<","values":[{"date":"2025-06-01"}]' in canonical


def test_malformed_where_is_a_usage_error(cli_service: CliService) -> None:
    result = dpgate(
        cli_service, cli_service.tokens["analyst"], "query", "gp_appointments",
        "--where", "status~DNA", "--epsilon", "0.1",
    )  # fmt: skip
    assert result.exit_code == 2
    assert "col:in:a,b" in result.output


def test_non_integer_value_for_an_integer_column_is_a_usage_error(
    cli_service: CliService,
) -> None:
    result = dpgate(
        cli_service, cli_service.tokens["analyst"], "query", "gp_appointments",
        "--where", "hour=evening", "--epsilon", "0.1",
    )  # fmt: skip
    assert result.exit_code == 2
    assert "hour holds integers" in result.output


def test_unknown_column_exits_2_with_the_servers_reason(cli_service: CliService) -> None:
    before = remaining(cli_service)
    result = dpgate(
        cli_service, cli_service.tokens["analyst"], "query", "gp_appointments",
        "--by", "nhs_number", "--epsilon", "0.1",
    )  # fmt: skip
    assert result.exit_code == 2
    assert "UNKNOWN_COLUMN" in result.stderr
    assert "Traceback" not in result.output
    assert remaining(cli_service) == before


def test_unknown_column_error_is_json_on_stderr_with_json(cli_service: CliService) -> None:
    result = dpgate(
        cli_service, cli_service.tokens["analyst"], "query", "gp_appointments",
        "--by", "nhs_number", "--epsilon", "0.1", "--json",
    )  # fmt: skip
    assert result.exit_code == 2
    error = error_of(result)
    assert error["reason"] == "UNKNOWN_COLUMN"
    assert error["exit_code"] == 2
    assert result.stdout == ""


def test_exhausted_budget_exits_3_and_charges_nothing(cli_service: CliService) -> None:
    before = remaining(cli_service, "poor_analyst")
    result = dpgate(
        cli_service, cli_service.tokens["poor_analyst"], "query", "gp_appointments",
        "--count", "--by", "month", "--epsilon", "0.5",
    )  # fmt: skip
    assert result.exit_code == 3
    assert "BUDGET_EXHAUSTED" in result.stderr
    assert "remaining: 0.1" in result.stderr
    assert remaining(cli_service, "poor_analyst") == before


def test_exhausted_budget_json_error_has_requested_and_remaining(cli_service: CliService) -> None:
    result = dpgate(
        cli_service, cli_service.tokens["poor_analyst"], "query", "gp_appointments",
        "--count", "--epsilon", "0.5", "--json",
    )  # fmt: skip
    assert result.exit_code == 3
    metadata = error_of(result)["metadata"]
    assert Decimal(metadata["requested"]) == Decimal("0.5")
    assert Decimal(metadata["remaining"]) == Decimal("0.1")


def test_query_with_an_auditor_token_exits_4(cli_service: CliService) -> None:
    result = dpgate(
        cli_service, cli_service.tokens["auditor"], "query", "gp_appointments",
        "--count", "--epsilon", "0.1",
    )  # fmt: skip
    assert result.exit_code == 4
    assert "ROLE_FORBIDDEN" in result.stderr


def test_bad_token_exits_4(cli_service: CliService) -> None:
    result = dpgate(cli_service, "dpg_not-a-real-token", "budget")
    assert result.exit_code == 4
    assert "BAD_TOKEN" in result.stderr


def test_missing_token_exits_4_and_says_how_to_set_one(cli_service: CliService) -> None:
    result = dpgate(cli_service, None, "budget")
    assert result.exit_code == 4
    assert "DPGATE_TOKEN" in result.stderr


def test_unreachable_server_exits_6(cli_service: CliService) -> None:
    result = dpgate(
        cli_service, cli_service.tokens["analyst"], "budget", env={"DPGATE_TARGET": "127.0.0.1:1"}
    )
    assert result.exit_code == 6
    assert "127.0.0.1:1" in result.stderr


def test_budget_shows_the_allocation(cli_service: CliService) -> None:
    budgets = as_json(dpgate(cli_service, cli_service.tokens["poor_analyst"], "budget", "--json"))
    assert budgets == [
        {
            "dataset_id": "gp_appointments",
            "accounting": "pure_dp",
            "allocated": "0.1",
            "spent": "0",
            "remaining": "0.1",
            "expires_at": "",
        }
    ]


def test_budget_table_shows_remaining(cli_service: CliService) -> None:
    result = dpgate(cli_service, cli_service.tokens["poor_analyst"], "budget")
    assert result.exit_code == 0
    assert "remaining" in result.stdout
    assert "0.1" in result.stdout


def test_releases_list_a_query_just_run(cli_service: CliService) -> None:
    answer = as_json(
        dpgate(
            cli_service, cli_service.tokens["analyst"], "query", "gp_appointments",
            "--count", "--by", "sex", "--epsilon", "0.35", "--json",
        )
    )  # fmt: skip
    found = as_json(dpgate(cli_service, cli_service.tokens["analyst"], "releases", "--json"))
    assert answer["release_id"] in [r["release_id"] for r in found]
    table = dpgate(cli_service, cli_service.tokens["analyst"], "releases")
    assert "COUNT by sex" in table.stdout


def test_releases_limit_shows_only_the_newest(cli_service: CliService) -> None:
    for epsilon in ("0.031", "0.032"):
        as_json(
            dpgate(
                cli_service, cli_service.tokens["analyst"], "query", "gp_appointments",
                "--count", "--by", "weekday", "--epsilon", epsilon, "--json",
            )
        )  # fmt: skip
    every = as_json(dpgate(cli_service, cli_service.tokens["analyst"], "releases", "--json"))
    newest = as_json(
        dpgate(cli_service, cli_service.tokens["analyst"], "releases", "--limit", "1", "--json")
    )
    assert len(every) >= 2
    assert newest == every[:1]
    assert '"spend_units":32000000' in newest[0]["canonical_query"]
    refused = dpgate(cli_service, cli_service.tokens["analyst"], "releases", "--limit", "0")
    assert refused.exit_code == 2


def test_query_csv_writes_every_cell_unrounded(cli_service: CliService, tmp_path: Path) -> None:
    out = tmp_path / "cells.csv"
    result = dpgate(
        cli_service, cli_service.tokens["analyst"], "query", "gp_appointments",
        "--count", "--by", "month", "--epsilon", "0.36", "--limit", "2", "--csv", str(out),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert f"{MONTHS - 2} more rows" in result.stdout
    with out.open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == MONTHS
    assert set(rows[0]) == {"month", "value", "ci_low", "ci_high"}


def test_a_query_derived_from_a_release_says_it_was_free(cli_service: CliService) -> None:
    source = as_json(
        dpgate(
            cli_service, cli_service.tokens["analyst"], "query", "gp_appointments",
            "--count", "--by", "hcp_type", "--epsilon", "0.41", "--json",
        )
    )  # fmt: skip
    args = ("gp_appointments", "--count", "--where", "hcp_type=GP", "--epsilon", "0.01")
    preview = dpgate(cli_service, cli_service.tokens["analyst"], "preview", *args)
    fresh_by_default = ("query", *args[:-1], "0.011", "--json")
    assert (
        as_json(dpgate(cli_service, cli_service.tokens["analyst"], *fresh_by_default))[
            "derived_from"
        ]
        == ""
    )
    assert f"or free: derived from release {source['release_id']}" in preview.stdout
    before = remaining(cli_service)
    result = dpgate(
        cli_service, cli_service.tokens["analyst"], "query", *args, "--derive", "if-as-accurate"
    )
    assert result.exit_code == 0, result.output
    assert f"free: derived from release {source['release_id']}" in result.stdout
    assert remaining(cli_service) == before
    refused = dpgate(cli_service, cli_service.tokens["analyst"], "query", *args, "--derive", "x")
    assert refused.exit_code == 2

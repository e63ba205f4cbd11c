"""`dpgate admin ...` and `dpgate-server create-admin-token` against a real server."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest
from typer.testing import CliRunner

from dpgate_server import commands as server_cli
from dpgate_server.ledger.ledger import Ledger
from tests.integration.cli.helpers import CliService, as_json, dpgate, error_of


def admin(service: CliService, *args: str) -> Any:
    """Run an admin command with --json and return its document."""
    return as_json(dpgate(service, service.tokens["admin"], "admin", *args, "--json"))


def new_requester(service: CliService, name: str) -> str:
    created = admin(
        service, "requesters", "create", "--name", name, "--organisation", "NHS Leeds",
        "--purpose", "DSA-0042",
    )  # fmt: skip
    assert isinstance(created, dict)
    return str(created["requester_id"])


def test_create_admin_token_prints_only_the_token_on_stdout(cli_service: CliService) -> None:
    created = cli_service.create_admin_token
    assert created.stdout.strip().startswith("dpg_")
    assert len(created.stdout.strip().splitlines()) == 1
    assert "shown once" in created.stderr


def test_admin_token_created_offline_works_against_the_server(cli_service: CliService) -> None:
    found = admin(cli_service, "requesters", "list")
    assert "admin" in [r["requester_id"] for r in found]


def test_create_admin_token_is_audited_without_the_secret(cli_service: CliService) -> None:
    with Ledger.open_sqlite(cli_service.ledger_path) as ledger:
        events = [e for e in ledger.list_events() if e.rpc == "create-admin-token"]
    assert [e.detail.split()[0] for e in events] == ["create", "issue"]
    assert all(cli_service.tokens["admin"] not in e.detail for e in events)


def test_create_admin_token_for_a_disabled_requester_is_refused(cli_service: CliService) -> None:
    requester_id = new_requester(cli_service, "Leaver")
    admin(cli_service, "requesters", "disable", requester_id)
    result = CliRunner().invoke(
        server_cli.app,
        ["create-admin-token", "--config", str(cli_service.config), "--requester-id", requester_id],
    )
    assert result.exit_code == 1
    assert "disabled" in result.stderr
    assert result.stdout == ""


def test_requesters_create_then_list_shows_them_enabled(cli_service: CliService) -> None:
    requester_id = new_requester(cli_service, "A Planner")
    found = {r["requester_id"]: r for r in admin(cli_service, "requesters", "list")}
    assert found[requester_id]["enabled"] is True
    assert found[requester_id]["purpose"] == "DSA-0042"


def test_requesters_list_table(cli_service: CliService) -> None:
    result = dpgate(cli_service, cli_service.tokens["admin"], "admin", "requesters", "list")
    assert result.exit_code == 0
    assert "poor_analyst" in result.stdout


def test_disabled_requesters_tokens_stop_working(cli_service: CliService) -> None:
    requester_id = new_requester(cli_service, "Short Stay")
    issued = admin(cli_service, "tokens", "issue", requester_id, "--role", "analyst")
    assert isinstance(issued, dict)
    admin(cli_service, "requesters", "disable", requester_id)
    result = dpgate(cli_service, str(issued["token"]), "budget")
    assert result.exit_code == 4


def test_disabling_an_unknown_requester_exits_5(cli_service: CliService) -> None:
    result = dpgate(
        cli_service, cli_service.tokens["admin"], "admin", "requesters", "disable", "nobody"
    )
    assert result.exit_code == 5


def test_issued_token_works_and_revoked_token_does_not(cli_service: CliService) -> None:
    requester_id = new_requester(cli_service, "Token Holder")
    issued = admin(cli_service, "tokens", "issue", requester_id, "--role", "analyst")
    assert isinstance(issued, dict)
    assert dpgate(cli_service, str(issued["token"]), "budget").exit_code == 0
    admin(cli_service, "tokens", "revoke", str(issued["token_id"]))
    assert dpgate(cli_service, str(issued["token"]), "budget").exit_code == 4


def test_issue_token_table_shows_the_secret_once(cli_service: CliService) -> None:
    requester_id = new_requester(cli_service, "Shown Once")
    result = dpgate(
        cli_service, cli_service.tokens["admin"], "admin", "tokens", "issue", requester_id,
        "--role", "auditor", "--expires", "2099-01-31",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.stdout.count("dpg_") == 1
    assert "shown once" in result.stdout


def test_provider_token_without_practice_exits_2(cli_service: CliService) -> None:
    result = dpgate(
        cli_service, cli_service.tokens["admin"], "admin", "tokens", "issue", "provider",
        "--role", "provider", "--json",
    )  # fmt: skip
    assert result.exit_code == 2
    assert "practice" in error_of(result)["message"]


def test_unknown_role_is_a_usage_error(cli_service: CliService) -> None:
    result = dpgate(
        cli_service, cli_service.tokens["admin"], "admin", "tokens", "issue", "analyst",
        "--role", "superuser",
    )  # fmt: skip
    assert result.exit_code == 2


def test_grant_top_up_and_reduce_move_the_allocation(cli_service: CliService) -> None:
    requester_id = new_requester(cli_service, "Budget Holder")
    granted = admin(
        cli_service, "grant", requester_id, "gp_appointments", "--epsilon", "1.5",
        "--purpose", "winter planning", "--agreement", "DSA-2025-7",
    )  # fmt: skip
    topped = admin(cli_service, "top-up", requester_id, "gp_appointments", "--epsilon", "0.25")
    reduced = admin(cli_service, "reduce", requester_id, "gp_appointments", "--epsilon", "1")
    allocated = [Decimal(str(b["allocated"])) for b in (granted, topped, reduced)]
    assert allocated == [Decimal("1.5"), Decimal("1.75"), Decimal("0.75")]


def test_grant_table_says_what_is_allocated(cli_service: CliService) -> None:
    requester_id = new_requester(cli_service, "Granted Table")
    result = dpgate(
        cli_service, cli_service.tokens["admin"], "admin", "grant", requester_id,
        "gp_appointments", "--epsilon", "2", "--expires", "2099-12-31",
        "--purpose", "winter planning", "--agreement", "DSA-2025-7",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "epsilon 2 allocated" in result.stdout
    assert "2099-12-31" in result.stdout


def test_new_grant_without_purpose_exits_2_and_says_why(cli_service: CliService) -> None:
    requester_id = new_requester(cli_service, "No Purpose")
    result = dpgate(
        cli_service, cli_service.tokens["admin"], "admin", "grant", requester_id,
        "gp_appointments", "--epsilon", "1",
    )  # fmt: skip
    assert result.exit_code == 2
    assert "purpose" in result.stderr
    assert "agreement" in result.stderr


def test_top_up_without_an_allocation_exits_5(cli_service: CliService) -> None:
    requester_id = new_requester(cli_service, "Never Granted")
    result = dpgate(
        cli_service, cli_service.tokens["admin"], "admin", "top-up", requester_id,
        "gp_appointments", "--epsilon", "1",
    )  # fmt: skip
    assert result.exit_code == 5
    assert "admin grant" in result.stderr


def test_reduce_below_spent_exits_7(cli_service: CliService) -> None:
    as_json(
        dpgate(
            cli_service, cli_service.tokens["analyst"], "query", "gp_appointments",
            "--count", "--by", "age_band", "--epsilon", "0.05", "--json",
        )
    )  # fmt: skip
    allocated = as_json(dpgate(cli_service, cli_service.tokens["analyst"], "budget", "--json"))
    result = dpgate(
        cli_service, cli_service.tokens["admin"], "admin", "reduce", "analyst",
        "gp_appointments", "--epsilon", allocated[0]["allocated"],
    )  # fmt: skip
    assert result.exit_code == 7
    assert "BELOW_SPENT" in result.stderr


def test_amount_with_too_many_decimals_exits_2(cli_service: CliService) -> None:
    result = dpgate(
        cli_service, cli_service.tokens["admin"], "admin", "grant", "analyst",
        "gp_appointments", "--epsilon", "0.0000000001",
    )  # fmt: skip
    assert result.exit_code == 2
    assert "9 decimal places" in result.stderr


def test_cap_set_records_the_new_cap(cli_service: CliService) -> None:
    shown = admin(cli_service, "datasets", "show", "gp_appointments")
    wanted = max(Decimal(shown["cap"]), Decimal(shown["allocated"])) + 5
    cap = admin(
        cli_service, "cap", "set", "gp_appointments", "--epsilon", str(wanted),
        "--reason", "second quarter",
    )  # fmt: skip
    assert isinstance(cap, dict)
    assert Decimal(str(cap["cap"])) == wanted
    with Ledger.open_sqlite(cli_service.ledger_path) as ledger:
        history = ledger.admin.cap_history("gp_appointments")
    assert history[-1].reason == "second quarter"


def test_cap_set_without_a_reason_is_a_usage_error(cli_service: CliService) -> None:
    result = dpgate(
        cli_service, cli_service.tokens["admin"], "admin", "cap", "set", "gp_appointments",
        "--epsilon", "25",
    )  # fmt: skip
    assert result.exit_code == 2
    assert "--reason" in result.output


def test_cap_set_below_spent_exits_7(cli_service: CliService) -> None:
    as_json(
        dpgate(
            cli_service, cli_service.tokens["analyst"], "query", "gp_appointments",
            "--count", "--by", "hcp_type", "--epsilon", "0.05", "--json",
        )
    )  # fmt: skip
    result = dpgate(
        cli_service, cli_service.tokens["admin"], "admin", "cap", "set", "gp_appointments",
        "--epsilon", "0.01", "--reason", "too low",
    )  # fmt: skip
    assert result.exit_code == 7


def test_spending_report_lists_allocations(cli_service: CliService) -> None:
    report = admin(cli_service, "spending", "--dataset", "gp_appointments")
    rows = {r["requester_id"]: r for r in report}
    assert rows["poor_analyst"]["allocated"] == "0.1"
    table = dpgate(cli_service, cli_service.tokens["admin"], "admin", "spending")
    assert "poor_analyst" in table.stdout


def test_admin_command_with_an_analyst_token_exits_4(cli_service: CliService) -> None:
    result = dpgate(cli_service, cli_service.tokens["analyst"], "admin", "requesters", "list")
    assert result.exit_code == 4
    assert "ROLE_FORBIDDEN" in result.stderr


# -- operators' rough edges ------------------------------------------------------------


def test_cap_below_the_allocations_exits_7_and_force_sets_it(cli_service: CliService) -> None:
    shown = admin(cli_service, "datasets", "show", "gp_appointments")
    below = str(Decimal(shown["allocated"]) - Decimal("0.1"))
    args = ("admin", "cap", "set", "gp_appointments", "--epsilon", below, "--reason", "tight")
    refused = dpgate(cli_service, cli_service.tokens["admin"], *args)
    assert refused.exit_code == 7
    assert "CAP_BELOW_ALLOCATED" in refused.stderr
    assert "--force" in refused.stderr
    forced = as_json(dpgate(cli_service, cli_service.tokens["admin"], *args, "--force", "--json"))
    assert Decimal(forced["cap"]) == Decimal(below)
    admin(
        cli_service, "cap", "set", "gp_appointments", "--epsilon", shown["cap"],
        "--reason", "restore", "--force",
    )  # fmt: skip


def test_datasets_show_gives_cap_allocated_and_spent(cli_service: CliService) -> None:
    shown = admin(cli_service, "datasets", "show", "gp_appointments")
    report = admin(cli_service, "spending", "--dataset", "gp_appointments")
    assert Decimal(shown["allocated"]) == sum(Decimal(r["allocated"]) for r in report)
    assert shown["allocation_count"] == len(report)
    assert shown["share_releases"] is True
    view = dpgate(cli_service, cli_service.tokens["admin"], "admin", "datasets", "show",
                  "gp_appointments")  # fmt: skip
    assert view.exit_code == 0
    for label in ("cap", "allocated", "spent", "remaining", "release sharing on"):
        assert label in view.stdout


def test_datasets_sharing_turns_off_and_on(cli_service: CliService) -> None:
    off = admin(cli_service, "datasets", "sharing", "gp_appointments", "off")
    try:
        assert off == {"dataset_id": "gp_appointments", "share_releases": False}
        assert admin(cli_service, "datasets", "show", "gp_appointments")["share_releases"] is False
    finally:
        on = dpgate(cli_service, cli_service.tokens["admin"], "admin", "datasets", "sharing",
                    "gp_appointments", "on")  # fmt: skip
    assert on.exit_code == 0
    assert "release sharing on gp_appointments is on" in on.stdout


def test_requesters_enable_undoes_disable(cli_service: CliService) -> None:
    requester_id = new_requester(cli_service, "Returner")
    admin(cli_service, "requesters", "disable", requester_id)
    enabled = admin(cli_service, "requesters", "enable", requester_id)
    assert enabled["enabled"] is True
    found = {r["requester_id"]: r for r in admin(cli_service, "requesters", "list")}
    assert found[requester_id]["enabled"] is True


def test_tokens_list_shows_ids_and_dates_never_the_token(cli_service: CliService) -> None:
    requester_id = new_requester(cli_service, "Token Holder")
    issued = admin(cli_service, "tokens", "issue", requester_id, "--role", "auditor",
                   "--expires", "2031-01-01")  # fmt: skip
    listed = admin(cli_service, "tokens", "list", "--requester", requester_id)
    assert [(t["token_id"], t["role"]) for t in listed] == [(issued["token_id"], "auditor")]
    assert listed[0]["expires_at"].startswith("2031-01-01T00:00:00")
    assert listed[0]["revoked_at"] is None
    view = dpgate(cli_service, cli_service.tokens["admin"], "admin", "tokens", "list")
    assert issued["token_id"] in view.stdout
    assert issued["token"] not in view.stdout + json.dumps(listed)
    for header in ("token", "requester", "role", "issued", "expires", "revoked"):
        assert header in view.stdout


def test_an_expiry_in_the_past_exits_2(cli_service: CliService) -> None:
    requester_id = new_requester(cli_service, "Late")
    result = dpgate(cli_service, cli_service.tokens["admin"], "admin", "tokens", "issue",
                    requester_id, "--role", "analyst", "--expires", "2020-01-01")  # fmt: skip
    assert result.exit_code == 2
    assert "BAD_TIME" in result.stderr
    assert "not in the future" in result.stderr


def test_top_up_with_only_expires_changes_only_the_expiry(cli_service: CliService) -> None:
    requester_id = new_requester(cli_service, "Extended")
    admin(cli_service, "grant", requester_id, "gp_appointments", "--epsilon", "0.5",
          "--purpose", "testing", "--agreement", "DSA-CLI")  # fmt: skip
    moved = admin(cli_service, "top-up", requester_id, "gp_appointments",
                  "--expires", "2031-06-30")  # fmt: skip
    assert (moved["allocated"], moved["expires_at"][:10]) == ("0.5", "2031-06-30")
    again = admin(cli_service, "grant", requester_id, "gp_appointments", "--epsilon", "0",
                  "--expires", "2031-07-31")  # fmt: skip
    assert (again["allocated"], again["expires_at"][:10]) == ("0.5", "2031-07-31")
    nothing = dpgate(cli_service, cli_service.tokens["admin"], "admin", "top-up",
                     requester_id, "gp_appointments")  # fmt: skip
    assert nothing.exit_code == 2


def test_spending_shows_remaining_expiry_and_last_spend(cli_service: CliService) -> None:
    report = admin(cli_service, "spending", "--dataset", "gp_appointments")
    row = next(r for r in report if r["requester_id"] == "poor_analyst")
    assert {"remaining", "expires_at", "last_spend_at"} <= set(row)
    view = dpgate(cli_service, cli_service.tokens["admin"], "admin", "spending")
    for header in ("remaining", "expires", "last spend"):
        assert header in view.stdout


def test_tables_never_split_an_identifier_on_a_narrow_terminal(cli_service: CliService) -> None:
    requester_id = new_requester(cli_service, "A planner with rather a long name indeed")
    result = dpgate(cli_service, cli_service.tokens["admin"], "admin", "requesters", "list",
                    env={"COLUMNS": "60"})  # fmt: skip
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert max(len(line) for line in lines) <= 60
    cells = [cell.strip() for line in lines for cell in line.split("│")]
    assert requester_id in cells  # whole, on one line
    assert not [c for c in cells if c and c != requester_id and requester_id.startswith(c)]


@pytest.mark.parametrize(
    "command",
    [("admin", "cap", "set"), ("query",), ("admin", "tokens", "list"), ("releases",)],
    ids=" ".join,
)
def test_help_shows_flags_without_a_type(cli_service: CliService, command: tuple[str, ...]) -> None:
    result = dpgate(cli_service, None, *command, "--help")
    assert result.exit_code == 0
    assert "--json" in result.stdout
    assert "<bool>" not in result.stdout


def test_server_help_shows_flags_without_a_type() -> None:
    result = CliRunner().invoke(server_cli.app, ["serve", "--help"])
    assert "--accept-broken-audit-chain" in result.stdout
    assert "<bool>" not in result.stdout

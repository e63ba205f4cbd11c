"""`dpgate audit ...` against a real server: head, verify, events, export."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from tests.integration.cli.helpers import CliService, as_json, dpgate


def auditor(service: CliService, *args: str) -> object:
    return as_json(dpgate(service, service.tokens["auditor"], "audit", *args, "--json"))


def test_head_gives_count_and_hash(cli_service: CliService) -> None:
    head = auditor(cli_service, "head")
    assert isinstance(head, dict)
    assert head["event_count"] > 0
    assert len(head["head_hash"]) == 64


def test_verify_against_a_kept_head_passes(cli_service: CliService) -> None:
    head = auditor(cli_service, "head")
    assert isinstance(head, dict)
    kept = f"{head['event_count']}:{head['head_hash']}"
    result = dpgate(
        cli_service, cli_service.tokens["auditor"], "audit", "verify", "--expected-head", kept
    )
    assert result.exit_code == 0, result.output
    assert "the audit chain is valid" in result.stdout


def test_verify_against_a_head_the_chain_does_not_hold_exits_8(cli_service: CliService) -> None:
    result = dpgate(
        cli_service, cli_service.tokens["auditor"], "audit", "verify",
        "--expected-head", "1:" + "0" * 64, "--json",
    )  # fmt: skip
    assert result.exit_code == 8
    verification = json.loads(result.stdout)
    assert verification["valid"] is False
    assert verification["first_bad_sequence"] == 1


def test_malformed_expected_head_is_a_usage_error(cli_service: CliService) -> None:
    result = dpgate(
        cli_service, cli_service.tokens["auditor"], "audit", "verify", "--expected-head", "abc"
    )
    assert result.exit_code == 2
    assert "COUNT:HASH" in result.output


def test_events_lists_the_offline_admin_token(cli_service: CliService) -> None:
    events = auditor(cli_service, "events", "--from", "1", "--limit", "50")
    assert isinstance(events, list)
    assert "create-admin-token" in [e["rpc"] for e in events]
    table = dpgate(cli_service, cli_service.tokens["auditor"], "audit", "events", "--limit", "3")
    assert table.exit_code == 0
    assert "Audit events (3)" in table.stdout


def test_export_csv_writes_the_transparency_report(cli_service: CliService, tmp_path: Path) -> None:
    out = tmp_path / "report.csv"
    written = auditor(cli_service, "export", "--format", "csv", "--output", str(out))
    assert isinstance(written, dict)
    assert written["bytes"] == out.stat().st_size
    with out.open() as handle:
        records = {row["record"] for row in csv.DictReader(handle)}
    assert {"head", "dataset"} <= records


def test_export_json_writes_a_parseable_report(cli_service: CliService, tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    result = dpgate(
        cli_service, cli_service.tokens["auditor"], "audit", "export", "--output", str(out)
    )
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert "gp_appointments" in [d["dataset_id"] for d in report["datasets"]]


def test_export_to_stdout_with_a_dash(cli_service: CliService) -> None:
    result = dpgate(
        cli_service, cli_service.tokens["auditor"], "audit", "export", "--format", "json",
        "--output", "-",
    )  # fmt: skip
    assert result.exit_code == 0
    assert "datasets" in json.loads(result.stdout)


def test_unknown_export_format_is_a_usage_error(cli_service: CliService, tmp_path: Path) -> None:
    result = dpgate(
        cli_service, cli_service.tokens["auditor"], "audit", "export", "--format", "xml",
        "--output", str(tmp_path / "r.xml"),
    )  # fmt: skip
    assert result.exit_code == 2


def test_audit_command_with_an_analyst_token_exits_4(cli_service: CliService) -> None:
    result = dpgate(cli_service, cli_service.tokens["analyst"], "audit", "head")
    assert result.exit_code == 4
    assert "ROLE_FORBIDDEN" in result.stderr

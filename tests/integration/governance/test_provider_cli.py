"""`dpgate provider upload|status|consent` against the governed server."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner, Result

from dpgate.cli import app
from tests.integration.governance.conftest import GovernedService
from tests.unit.governance.helpers import DATASET_ID, OTHER, SMALL, UNUSED, csv_bytes, good_row


def dpgate(service: GovernedService, role: str, tmp_path: Path, *args: str) -> Result:
    environment = {
        "DPGATE_TARGET": service.target,
        "DPGATE_TOKEN": service.tokens[role],
        "DPGATE_CONFIG": str(tmp_path / "no-client-config.toml"),
        "COLUMNS": "200",
    }
    return CliRunner().invoke(app, list(args), env=environment)


def test_upload_command_stages_and_reports_rows(governed: GovernedService, tmp_path: Path) -> None:
    result = dpgate(
        governed,
        "provider",
        tmp_path,
        "provider",
        "upload",
        DATASET_ID,
        SMALL,
        str(governed.world.files.extracts[SMALL]),
        "--json",
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["rows_staged"] > 1000


def test_refused_upload_prints_the_problems_and_fails(
    governed: GovernedService, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_bytes(csv_bytes([good_row(mode="Phone")] * 5 + [good_row(duration_minutes="0")]))
    result = dpgate(
        governed, "provider", tmp_path, "provider", "upload", DATASET_ID, SMALL, str(bad)
    )
    assert result.exit_code == 2
    lines = result.output.splitlines()
    assert lines[0] == (
        "dpgate: error: the extract was refused, nothing was staged (2 problems; each is "
        "listed once):"
    )
    assert lines[1].startswith(
        "  lines 2, 3, 4 and 2 more, column mode: not one of the dataset's labels: Face-to-Face"
    )
    assert lines[2] == (
        "  line 7, column duration_minutes: not a possible duration (1 to 1440 minutes)"
    )
    assert result.output.count("column mode") == 1  # listed once, not again as metadata
    assert "Phone" not in result.output


def test_upload_for_a_practice_the_token_is_not_bound_to_says_which_token(
    governed: GovernedService, tmp_path: Path
) -> None:
    extract = str(governed.world.files.extracts[OTHER])
    result = dpgate(
        governed, "provider", tmp_path, "provider", "upload", DATASET_ID, OTHER, extract
    )
    assert result.exit_code == 4
    assert (
        f"this token may upload only for practice {SMALL}; the extract is for {OTHER}: "
        "use a token bound to that practice"
    ) in result.output
    assert "another role" not in result.output
    assert "--role provider --practice CODE" in result.output


def test_status_command_shows_consent(governed: GovernedService, tmp_path: Path) -> None:
    result = dpgate(governed, "provider", tmp_path, "provider", "status", DATASET_ID, SMALL)
    assert result.exit_code == 0, result.output
    assert f"{SMALL} on {DATASET_ID}: consent granted" in result.stdout


def test_consent_command_on_an_admin_token_records_the_instruction(
    governed: GovernedService, tmp_path: Path
) -> None:
    args = ("provider", "consent", DATASET_ID, UNUSED)
    refused = dpgate(governed, "admin", tmp_path, *args, "withdrawn")
    assert refused.exit_code != 0
    assert "written instruction" in refused.output
    granted = dpgate(
        governed, "admin", tmp_path, *args, "granted", "--instruction-reference", "letter 9"
    )
    assert granted.exit_code == 0, granted.output
    assert "consent granted" in granted.stdout

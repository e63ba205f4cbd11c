"""Where `dpgate` connects: flags, environment, config-file profiles; the token never shown."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner, Result

from dpgate.cli import app
from tests.integration.cli.helpers import CliService, as_json

CLEAN = {"DPGATE_TARGET": None, "DPGATE_TOKEN": None, "DPGATE_PROFILE": None,
         "DPGATE_TOKEN_FILE": None, "DPGATE_CA_CERT": None}  # fmt: skip


def run(config: Path, *args: str, **env: str) -> Result:
    return CliRunner().invoke(app, list(args), env={**CLEAN, "DPGATE_CONFIG": str(config), **env})


def write(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


def test_default_profile_supplies_target_and_token(tmp_path: Path) -> None:
    config = write(tmp_path / "client.toml", '[default]\ntarget = "h:1"\ntoken = "dpg_x"\n')
    shown = as_json(run(config, "config", "--json"))
    assert shown["target"] == "h:1"
    assert shown["token_source"].startswith("profile 'default'")


def test_named_profile_is_chosen_with_the_flag(tmp_path: Path) -> None:
    config = write(tmp_path / "client.toml", '[default]\ntarget = "h:1"\n[prod]\ntarget = "h:2"\n')
    assert as_json(run(config, "--profile", "prod", "config", "--json"))["target"] == "h:2"


def test_environment_beats_the_config_file(tmp_path: Path) -> None:
    config = write(tmp_path / "client.toml", '[default]\ntarget = "h:1"\ntoken = "dpg_x"\n')
    shown = as_json(run(config, "config", "--json", DPGATE_TARGET="h:9", DPGATE_TOKEN="dpg_y"))
    assert shown["target"] == "h:9"
    assert shown["token_source"] == "DPGATE_TOKEN"


def test_flag_beats_the_environment(tmp_path: Path) -> None:
    shown = as_json(
        run(tmp_path / "none.toml", "--target", "h:3", "config", "--json", DPGATE_TARGET="h:9")
    )
    assert shown["target"] == "h:3"


def test_demo_address_is_the_default_target(tmp_path: Path) -> None:
    assert as_json(run(tmp_path / "none.toml", "config", "--json"))["target"] == "127.0.0.1:50051"


def test_token_file_is_read(tmp_path: Path) -> None:
    write(tmp_path / "analyst.token", "dpg_from_file\n")
    config = write(tmp_path / "client.toml", '[default]\ntoken_file = "analyst.token"\n')
    shown = as_json(run(config, "config", "--json"))
    assert shown["token_source"].endswith("(token_file)")


def test_config_never_prints_the_token(tmp_path: Path) -> None:
    result = run(tmp_path / "none.toml", "config", DPGATE_TOKEN="dpg_secret_value")
    assert result.exit_code == 0
    assert "dpg_secret_value" not in result.output
    assert "DPGATE_TOKEN" in result.stdout


def test_unknown_profile_exits_2(tmp_path: Path) -> None:
    config = write(tmp_path / "client.toml", '[default]\ntarget = "h:1"\n')
    result = run(config, "--profile", "prod", "config")
    assert result.exit_code == 2
    assert "no profile 'prod'" in result.stderr


def test_unknown_key_exits_2_naming_it(tmp_path: Path) -> None:
    config = write(tmp_path / "client.toml", '[default]\ntargte = "h:1"\n')
    result = run(config, "config")
    assert result.exit_code == 2
    assert "targte" in result.stderr


def test_missing_ca_certificate_exits_2(tmp_path: Path) -> None:
    result = run(tmp_path / "none.toml", "config", DPGATE_CA_CERT=str(tmp_path / "ca.pem"))
    assert result.exit_code == 2
    assert "ca.pem" in result.stderr


def test_token_in_a_readable_config_file_warns(tmp_path: Path) -> None:
    config = write(tmp_path / "client.toml", '[default]\ntoken = "dpg_x"\n', mode=0o644)
    result = run(config, "config")
    assert result.exit_code == 0
    assert "chmod 600" in result.stderr


def test_profile_token_works_against_the_server(cli_service: CliService, tmp_path: Path) -> None:
    token = cli_service.tokens["analyst"]
    config = write(
        tmp_path / "client.toml", f'[analyst]\ntarget = "{cli_service.target}"\ntoken = "{token}"\n'
    )
    found = as_json(run(config, "--profile", "analyst", "datasets", "--json"))
    assert found[0]["dataset_id"] == cli_service.dataset_id


def test_real_process_exit_code_and_message_without_traceback(cli_service: CliService) -> None:
    environment = {**os.environ, "DPGATE_TARGET": cli_service.target,
                   "DPGATE_TOKEN": cli_service.tokens["poor_analyst"],
                   "DPGATE_CONFIG": "/nonexistent/client.toml"}  # fmt: skip
    environment.pop("DPGATE_PROFILE", None)
    result = subprocess.run(
        [sys.executable, "-m", "dpgate.cli", "query", "gp_appointments", "--count",
         "--by", "practice_code", "--epsilon", "1"],
        capture_output=True, text=True, timeout=60, env=environment,
    )  # fmt: skip
    assert result.returncode == 3
    assert "dpgate: error:" in result.stderr
    assert "Traceback" not in result.stderr


def test_replicas_listed_in_a_profile_are_one_comma_separated_target(tmp_path: Path) -> None:
    config = write(tmp_path / "client.toml", '[default]\ntarget = ["h:1", "h:2"]\n')
    assert as_json(run(config, "config", "--json"))["target"] == "h:1,h:2"


def test_a_bad_replica_address_exits_2_naming_it(tmp_path: Path) -> None:
    result = run(
        tmp_path / "none.toml",
        "budget",
        DPGATE_TARGET="127.0.0.1:50051,127.0.0.1",
        DPGATE_TOKEN="dpg_x",
    )
    assert result.exit_code == 2
    assert "'127.0.0.1' is not host:port" in result.stderr

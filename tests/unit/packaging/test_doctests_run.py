"""The examples in docstrings are tests: the default pytest run collects them."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def test_the_default_run_collects_doctests_of_both_packages() -> None:
    options = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    assert "--doctest-modules" in options["addopts"].split()
    assert {"client/dpgate", "server/dpgate_server"} <= set(options["testpaths"])


def test_client_doctests_are_collected_and_generated_code_is_not() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "--collect-only",
            "-q",
            "-p",
            "no:cacheprovider",
            "client/dpgate",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    collected = [line for line in result.stdout.splitlines() if "::" in line]
    assert any(line.startswith("client/dpgate/analysis.py::") for line in collected), collected
    assert not [line for line in collected if "_pb2" in line or "/_proto/" in line]

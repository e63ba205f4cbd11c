"""The import contract (docs/architecture.md) is part of the suite, not a separate tool run.

`lint-imports` reads the contracts from pyproject.toml and checks the real import graph,
indirect imports included. The second test keeps the contract whole: a new top-level
module or package of the server must be given a layer, or it would escape the check.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import dpgate_server

ROOT = Path(__file__).resolve().parents[3]
PYPROJECT = ROOT / "pyproject.toml"


def _contracts() -> dict[str, dict[str, Any]]:
    config = tomllib.loads(PYPROJECT.read_text())["tool"]["importlinter"]
    return {c["id"]: c for c in config["contracts"]}


def test_import_contracts_are_kept() -> None:
    # In a child process: import-linter configures logging with dictConfig, which would
    # disable the loggers of modules already imported by this test session.
    code = "from importlinter.cli import lint_imports_command; lint_imports_command()"
    command = [sys.executable, "-c", code, "--config", str(PYPROJECT), "--no-cache"]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_server_module_has_a_layer() -> None:
    layers = _contracts()["layers"]["layers"]
    layered = {
        name.strip().removeprefix("dpgate_server.")
        for layer in layers
        for group in layer.split("|")
        for name in group.split(":")
    }
    package = Path(dpgate_server.__file__).parent
    children = {
        p.stem if p.is_file() else p.name
        for p in package.iterdir()
        if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").is_file()
    }
    assert children - layered == set(), "give these modules a layer in pyproject.toml"
    assert layered - children == set(), "these layers name no module"


def test_domain_packages_are_forbidden_the_wire() -> None:
    contract = _contracts()["domain-without-wire"]
    sources = {str(s).removeprefix("dpgate_server.") for s in contract["source_modules"]}
    assert {"vocabulary", "store", "ledger", "queries", "governance", "synthetic"} <= sources
    assert {"grpc", "google", "dpgate"} <= set(contract["forbidden_modules"])

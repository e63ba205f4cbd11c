"""The README says what is true of this repository, and points only inside it."""

from __future__ import annotations

import re
from pathlib import Path

from dpgate_server.ledger.model import Role

ROOT = Path(__file__).resolve().parents[3]
README = (ROOT / "README.md").read_text(encoding="utf-8")
LINK = re.compile(r"\]\(([^)\s]+)\)")


def test_every_link_resolves_to_a_file_inside_the_repository() -> None:
    targets = [t.split("#")[0] for t in LINK.findall(README) if not t.startswith("http")]
    assert targets
    for target in targets:
        path = (ROOT / target).resolve()
        assert path.is_relative_to(ROOT), target
        assert path.exists(), target


def test_the_guarantees_are_in_docs() -> None:
    assert "](docs/guarantees.md)" in README
    guarantees = (ROOT / "docs" / "guarantees.md").read_text(encoding="utf-8")
    assert guarantees.count("\n1. **") == 1
    assert "**Budgets that cannot be overspent.**" in guarantees


def test_the_demo_requester_ids_are_the_ones_the_demo_creates() -> None:
    for role in Role:
        assert f"`demo-{role.value}`" in README
    assert "four requesters (analyst, admin" not in README


def test_the_client_only_install_works_with_python_311s_pip() -> None:
    section = README[README.index("## Installing the client alone") :]
    section = section[: section.index("\n## ")]
    assert "pip install .  " in section
    assert "dpgate @ git+<" not in section  # pip 23.2 cannot install a placeholder URL


def test_the_demo_address_can_be_overridden() -> None:
    assert "DPGATE_SERVER__ADDRESS=127.0.0.1:50099 bash scripts/run-demo.sh" in README
    assert "export DPGATE_TARGET=127.0.0.1:50099" in README


def test_release_sharing_and_the_setting_that_turns_it_off_are_explained() -> None:
    assert "served free to any other\nrequester who asks the identical query" in README
    assert "dpgate admin datasets sharing gp_appointments off" in README

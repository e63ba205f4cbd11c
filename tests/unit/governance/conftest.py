"""The governance world, built once per session, and a fresh copy per test."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.governance.helpers import World, copy_world, shared_world


@pytest.fixture(scope="session")
def governance_world(tmp_path_factory: pytest.TempPathFactory) -> World:
    """Read-only: the generated dataset, raw extracts and opt-out lists."""
    return shared_world(tmp_path_factory.getbasetemp())


@pytest.fixture
def world(governance_world: World, tmp_path: Path) -> World:
    """A copy of the world this test may change."""
    return copy_world(governance_world, tmp_path / "world")

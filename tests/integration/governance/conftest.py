"""A real server over a copy of the governance world, with provider, admin and analyst tokens.

The server consumes the world's opt-out lists from its configured drop paths at the first
upload; their numbers are read here first, so tests can check the stored files against
them. One server per session (a worker takes seconds to start); tests must not depend on
each other's changes.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from dpgate import AdminClient, Client, ProviderClient
from dpgate_server.api.server import RunningServer, build_server
from dpgate_server.config import (
    DemoSettings,
    GovernanceSettings,
    LimitsSettings,
    ServerSettings,
    Settings,
    StorageSettings,
)
from dpgate_server.governance.optouts import read_opt_out_numbers
from tests.integration.api.conftest import prepare_ledger
from tests.unit.governance.helpers import DATASET_ID, SMALL, World, copy_world, shared_world

UPLOAD_LIMIT = 600_000
"""Bytes: above the small practice's extract (~300 kB), below twice it."""


@dataclass(frozen=True)
class GovernedService:
    """A running server, its world and tokens."""

    running: RunningServer
    world: World
    target: str
    ledger_path: Path
    tokens: dict[str, str]
    opted_out_numbers: frozenset[str]
    """Every NHS number on the two lists, read before the server consumed them."""

    def provider(self) -> ProviderClient:
        return ProviderClient(self.target, self.tokens["provider"])

    def admin_provider(self) -> ProviderClient:
        """ProviderService on an admin token (status, consent on written instruction)."""
        return ProviderClient(self.target, self.tokens["admin"])

    def admin(self) -> AdminClient:
        return AdminClient(self.target, self.tokens["admin"])

    def analyst(self) -> Client:
        return Client(self.target, self.tokens["analyst"])


@pytest.fixture(scope="session")
def governance_source(tmp_path_factory: pytest.TempPathFactory) -> World:
    return shared_world(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="session")
def governed(
    governance_source: World, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GovernedService]:
    base = tmp_path_factory.mktemp("governed")
    world = copy_world(governance_source, base / "world")
    numbers = read_opt_out_numbers(world.files.national_opt_out) + read_opt_out_numbers(
        world.files.type1_opt_out
    )
    settings = Settings(
        server=ServerSettings(address="127.0.0.1:0", workers=1),
        storage=StorageSettings(
            data_dir=world.store_root, ledger_path=base / "ledger.sqlite", key_file=world.key_file
        ),
        demo=DemoSettings(enabled=False),
        limits=LimitsSettings(
            requests_per_second=10_000, burst=10_000, peer_requests_per_second=100_000
        ),
        governance=GovernanceSettings(
            max_upload_bytes=UPLOAD_LIMIT,
            national_opt_out_file=world.files.national_opt_out,
            type1_opt_out_file=world.files.type1_opt_out,
        ),
    )
    running = build_server(settings)
    try:
        tokens = prepare_ledger(settings.storage.ledger_path, DATASET_ID, SMALL)
        yield GovernedService(
            running=running,
            world=world,
            target=f"127.0.0.1:{running.port}",
            ledger_path=settings.storage.ledger_path,
            tokens=tokens,
            opted_out_numbers=frozenset(numbers),
        )
    finally:
        running.stop(grace_seconds=1)

"""A real server over a copy of the governance world, with provider, admin and analyst tokens.

The server consumes the world's opt-out lists from its configured drop paths at the first
upload; their numbers are read here first, so tests can check the stored files against
them. One server per session (`governed`: a worker takes seconds to start) serves every
governance test; tests must not depend on each other's changes. A test that needs other
publishing settings (retention keeps one version) gets its own server from
`governed_server_factory`, the one place such servers are started.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from dpgate import AdminClient, Client, ProviderClient
from dpgate_server.api.server import RunningServer, build_server
from dpgate_server.config import (
    DemoSettings,
    GovernanceSettings,
    LimitsSettings,
    PublishingSettings,
    ServerSettings,
    Settings,
    StorageSettings,
)
from dpgate_server.governance.optouts import read_opt_out_numbers
from dpgate_server.store.store import DatasetStore
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

    @property
    def store(self) -> DatasetStore:
        """The server's dataset store, read directly (as an operator could)."""
        return DatasetStore(self.world.store_root)


GovernedServerFactory = Callable[..., contextlib.AbstractContextManager[GovernedService]]
"""`factory(name, publishing=None, prepare_world=None)`: a context that runs a server."""


@pytest.fixture(scope="session")
def governance_source(tmp_path_factory: pytest.TempPathFactory) -> World:
    return shared_world(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="session")
def governed_server_factory(
    governance_source: World, tmp_path_factory: pytest.TempPathFactory
) -> GovernedServerFactory:
    """Starts a server over a fresh copy of the governance world, stopped when its context ends.

    `publishing` replaces the default publishing settings; `prepare_world` runs on the copy
    before the server starts (to leave what a crash would have left, say).
    """

    @contextlib.contextmanager
    def start(
        name: str,
        *,
        publishing: PublishingSettings | None = None,
        prepare_world: Callable[[World], None] | None = None,
    ) -> Iterator[GovernedService]:
        base = tmp_path_factory.mktemp(name)
        world = copy_world(governance_source, base / "world")
        if prepare_world is not None:
            prepare_world(world)
        numbers = read_opt_out_numbers(world.files.national_opt_out) + read_opt_out_numbers(
            world.files.type1_opt_out
        )
        settings = Settings(
            server=ServerSettings(address="127.0.0.1:0", workers=1),
            storage=StorageSettings(
                data_dir=world.store_root,
                ledger_path=base / "ledger.sqlite",
                key_file=world.key_file,
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
            publishing=publishing or PublishingSettings(),
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

    return start


@pytest.fixture(scope="session")
def governed(governed_server_factory: GovernedServerFactory) -> Iterator[GovernedService]:
    """The governance tests' shared server."""
    with governed_server_factory("governed") as service:
        yield service

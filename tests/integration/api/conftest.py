"""A real server on port 0 over the shared small synthetic dataset, with real tokens.

`service` is the session's shared server (tests/integration/conftest.py) with a ledger
prepared the way an administrator would: requesters, one token per role, a dataset cap
and an allocation; `server` is its bare running server. `start_service` starts another
one, for tests that need their own limits.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import pytest

from dpgate_server.api.server import RunningServer, build_server
from dpgate_server.config import (
    DemoSettings,
    LimitsSettings,
    ServerSettings,
    Settings,
    StorageSettings,
)
from dpgate_server.ledger.ledger import Ledger
from dpgate_server.ledger.model import RequestInfo, Role
from dpgate_server.spend import to_units_floor
from dpgate_server.store.store import DatasetVersion

if TYPE_CHECKING:  # the shared conftest imports this module
    from tests.integration.conftest import SharedServer

ANALYST_EPSILON = 5
DATASET_CAP_EPSILON = 20
SETUP = RequestInfo(request_id="test-setup", rpc="test-setup")
GENEROUS_LIMITS = {
    "requests_per_second": 10_000,
    "burst": 10_000,
    "peer_requests_per_second": 100_000,
    "peer_burst": 100_000,
}
"""Tests call fast on purpose; a test of rate limits sets its own."""


def settings_for(store_root: Path, tmp: Path, workers: int = 2, **limits: float) -> Settings:
    return Settings(
        server=ServerSettings(address="127.0.0.1:0", rpc_threads=16, workers=workers),
        storage=StorageSettings(
            data_dir=store_root, ledger_path=tmp / "ledger.sqlite", key_file=tmp / "key"
        ),
        demo=DemoSettings(enabled=False),
        limits=LimitsSettings(**{**GENEROUS_LIMITS, **limits}),  # type: ignore[arg-type]
    )


@dataclass(frozen=True)
class Service:
    """A running server and the credentials a test needs."""

    running: RunningServer
    target: str
    ledger_path: Path
    dataset_id: str
    tokens: dict[str, str]
    """Role name -> bearer token ("analyst", "admin", "auditor", "provider")."""
    analyst_id: str


def prepare_ledger(path: Path | str, dataset_id: str, practice_code: str) -> dict[str, str]:
    """Requesters and tokens as an administrator would set them up; returns the tokens.

    `path` is the SQLite file, or a postgresql:// URL.
    """
    with Ledger.open(path) as ledger:
        admin = ledger.admin
        admin.set_dataset_cap(
            dataset_id,
            to_units_floor(DATASET_CAP_EPSILON),
            reason="test cap",
            request=SETUP,
        )
        tokens = {}
        for role in Role:
            requester_id = f"{role.value}-1"
            admin.create_requester(
                requester_id,
                name=f"Test {role.value}",
                organisation="Test Trust",
                agreement="DSA-TEST",
                request=SETUP,
            )
            codes = (practice_code,) if role is Role.PROVIDER else ()
            issued = admin.issue_token(requester_id, role, request=SETUP, practice_codes=codes)
            tokens[role.value] = issued.token
        admin.grant_allocation(
            "analyst-1",
            dataset_id,
            to_units_floor(ANALYST_EPSILON),
            request=SETUP,
            purpose="testing",
            agreement="DSA-TEST",
        )
    return tokens


def start_service(small_dataset: DatasetVersion, tmp: Path, **limits: float) -> Service:
    settings = settings_for(small_dataset.path.parents[2], tmp, **limits)
    running = build_server(settings)
    codes = small_dataset.metadata.column("practice_code").values or ("A00000",)
    tokens = prepare_ledger(settings.storage.ledger_path, small_dataset.dataset_id, str(codes[0]))
    return Service(
        running=running,
        target=f"127.0.0.1:{running.port}",
        ledger_path=settings.storage.ledger_path,
        dataset_id=small_dataset.dataset_id,
        tokens=tokens,
        analyst_id="analyst-1",
    )


@pytest.fixture(scope="session")
def service(shared_server: SharedServer) -> Service:
    """The session's shared server (tests/integration/conftest.py), with the role accounts."""
    return shared_server.api


@pytest.fixture(scope="session")
def server(service: Service) -> RunningServer:
    return service.running


@pytest.fixture
def channel(server: RunningServer) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as chan:
        yield chan

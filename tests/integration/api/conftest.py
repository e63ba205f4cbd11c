"""A real server on port 0 over the shared small synthetic dataset."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from dpgate_server.api.server import RunningServer, build_server
from dpgate_server.config import DemoSettings, ServerSettings, Settings, StorageSettings
from dpgate_server.data.store import DatasetVersion


def settings_for(store_root: Path, tmp: Path) -> Settings:
    return Settings(
        server=ServerSettings(address="127.0.0.1:0", rpc_threads=4),
        storage=StorageSettings(
            data_dir=store_root, ledger_path=tmp / "ledger.sqlite", key_file=tmp / "key"
        ),
        demo=DemoSettings(enabled=False),
    )


@pytest.fixture(scope="module")
def server(
    small_dataset: DatasetVersion, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    store_root = small_dataset.path.parents[2]
    running = build_server(settings_for(store_root, tmp_path_factory.mktemp("server")))
    yield running
    running.stop(grace_seconds=1)


@pytest.fixture
def channel(server: RunningServer) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as chan:
        yield chan

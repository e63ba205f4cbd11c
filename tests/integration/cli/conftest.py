"""The CLI tests' one server (session scope: started only if a test here asks for it)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from dpgate_server.store.store import DatasetVersion
from tests.integration.cli.helpers import CliService, start_cli_service


@pytest.fixture(scope="session")
def cli_service(
    small_dataset: DatasetVersion, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[CliService]:
    started = start_cli_service(small_dataset, tmp_path_factory.mktemp("cli_service"))
    yield started
    started.running.stop(grace_seconds=1)

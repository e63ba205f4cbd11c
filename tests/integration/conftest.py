"""The one server the API and CLI tests share (session scope, started on first use).

Both suites read the session's small dataset and never publish, so one server serves
them: its config file, first admin token (from `dpgate-server create-admin-token`, offline)
and the CLI's accounts are made as an operator would, and the API tests' role accounts
(`analyst-1`, `admin-1`, ...) are added beside them. Each suite sees it through its own
view (`service`, `cli_service`), so the suites keep their own names and budgets and
never spend each other's allocations.

Servers that need other settings or a store they may change start their own: the
governance tests publish into a copy of their world, the notebooks change the dataset's
cap, and a few tests need tight limits, TLS or a second ledger backend.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from dpgate_server.store.store import DatasetVersion
from tests.integration.api.conftest import Service, prepare_ledger
from tests.integration.cli.helpers import CliService, start_cli_service


@dataclass(frozen=True)
class SharedServer:
    """One running server seen as the API tests' `Service` and the CLI tests' `CliService`."""

    api: Service
    cli: CliService


@pytest.fixture(scope="session")
def shared_server(
    small_dataset: DatasetVersion, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SharedServer]:
    cli = start_cli_service(small_dataset, tmp_path_factory.mktemp("shared_server"))
    try:
        tokens = prepare_ledger(cli.ledger_path, cli.dataset_id, cli.practice_code)
        api = Service(
            running=cli.running,
            target=cli.target,
            ledger_path=cli.ledger_path,
            dataset_id=cli.dataset_id,
            tokens=tokens,
            analyst_id="analyst-1",
        )
        yield SharedServer(api=api, cli=cli)
    finally:
        cli.running.stop(grace_seconds=1)

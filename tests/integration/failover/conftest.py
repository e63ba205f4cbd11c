"""Replicas on one PostgreSQL ledger (the session's throwaway cluster) and one dataset store.

`replica_ledger` is a fresh, migrated database prepared as an administrator would
(requesters, one token per role, a dataset cap, the analyst's allocation).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from dpgate_server.ledger import Ledger
from dpgate_server.store.store import DatasetVersion
from tests.conftest import PostgresLedgerDatabases
from tests.integration.api.conftest import SETUP, prepare_ledger


@dataclass(frozen=True)
class ReplicaLedger:
    """Where the replicas' ledger is and the tokens made in it."""

    url: str
    dataset_id: str
    tokens: dict[str, str]


@pytest.fixture
def replica_ledger(
    small_dataset: DatasetVersion, postgres_ledger_databases: PostgresLedgerDatabases
) -> Iterator[ReplicaLedger]:
    url = postgres_ledger_databases.take()
    with Ledger.open(url) as ledger:  # as a server's first start registers it
        ledger.admin.create_dataset(
            small_dataset.dataset_id,
            accounting=small_dataset.metadata.accounting,
            cap_units=0,
            reason="registered as at server start",
            request=SETUP,
        )
    codes = small_dataset.metadata.column("practice_code").values or ("A00000",)
    tokens = prepare_ledger(url, small_dataset.dataset_id, str(codes[0]))
    yield ReplicaLedger(url, small_dataset.dataset_id, tokens)
    postgres_ledger_databases.give_back(url)

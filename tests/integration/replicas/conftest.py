"""Three real server processes on one ledger: PostgreSQL, and one SQLite file (WAL).

`replicas` is parametrized over both backends and session-scoped, so every test here
shares one group of three servers per backend (a server takes seconds to start; pytest
runs one backend's tests, then the other's, so only one group runs at a time). They
serve the session's small dataset (read-only); each test makes its own requesters.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from dpgate_server.store.store import DatasetVersion
from tests.support.replicas import Replicas, start_replicas

REPLICAS = 3
FULL_RUN = os.environ.get("DPGATE_FULL_RUN") == "1"


def scale(small: int, full: int) -> int:
    """`small` in the default run, `full` under DPGATE_FULL_RUN=1 (as the adversarial suite)."""
    return full if FULL_RUN else small


@pytest.fixture(scope="session", params=["postgresql", "sqlite"])
def replicas(
    request: pytest.FixtureRequest,
    small_dataset: DatasetVersion,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Replicas]:
    state = tmp_path_factory.mktemp(f"replicas_{request.param}")
    store_root = small_dataset.path.parents[2]
    if request.param == "sqlite":
        location = str(state / "ledger.sqlite")
        with start_replicas(
            REPLICAS, location, store_root, state, small_dataset.dataset_id
        ) as group:
            yield group
        return
    databases = request.getfixturevalue("postgres_ledger_databases")
    location = databases.take()
    try:
        with start_replicas(
            REPLICAS, location, store_root, state, small_dataset.dataset_id
        ) as group:
            yield group
    finally:
        databases.give_back(location)


def spread(targets: list[str], index: int) -> str:
    """The replica client `index` talks to (round robin)."""
    return targets[index % len(targets)]

"""The servers the adversarial suite attacks, and the figures it reports.

Two in-process servers, started once per session (a worker takes seconds to start):

- `server_a` serves the shared small dataset (10 practices, ~570k rows): races, bad
  input, averaging, repeats, collusion, private data, timing, and the "with the target
  patient" side of the differencing attack. Its 16-query wait queue overflows when 64
  clients race.
- `server_b` serves a neighbouring copy without one patient: the other side of the
  differencing attack, and (one worker, a queue of 2, a 1 GiB worker cap) the limits.

Every test records what it tried in `figures`; the totals are printed at the end of the
run, and written as JSON to $DPGATE_ADVERSARIAL_FIGURES when that is set (bench/ reads it),
by tests/conftest.py, which the controlling process of a parallel run loads too.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from dpgate_server.store.store import DatasetVersion
from tests.adversarial.figures import FIGURES_KEY, FIGURES_OUTPUT, Figures, figures_of
from tests.adversarial.helpers import (
    Neighbour,
    Server,
    heaviest_patient,
    publish_without_patient,
    start_in_process,
)

SERVER_A_QUEUE = 16
SERVER_B_WORKER_MB = 1024
SERVER_B_QUEUE = 2


@pytest.fixture(scope="session")
def figures(request: pytest.FixtureRequest) -> Figures:
    return figures_of(request.config)


def pytest_sessionfinish(session: pytest.Session) -> None:
    """On a pytest-xdist worker, hand the tally to the controller (tests/conftest.py)."""
    workeroutput = getattr(session.config, "workeroutput", None)
    found = session.config.stash.get(FIGURES_KEY, None)
    if workeroutput is not None and found is not None:
        workeroutput[FIGURES_OUTPUT] = found.to_json()


@pytest.fixture(scope="session")
def server_a(
    small_dataset: DatasetVersion, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    server = start_in_process(
        small_dataset.path.parents[2],
        small_dataset.dataset_id,
        tmp_path_factory.mktemp("server_a"),
        workers=2,
        max_queued_queries=SERVER_A_QUEUE,
    )
    yield server
    assert server.running is not None
    server.running.stop(grace_seconds=1)


@pytest.fixture(scope="session")
def neighbour(small_dataset: DatasetVersion, tmp_path_factory: pytest.TempPathFactory) -> Neighbour:
    patient, _ = heaviest_patient(small_dataset)
    return publish_without_patient(small_dataset, tmp_path_factory.mktemp("store_b"), patient)


@pytest.fixture(scope="session")
def server_b(neighbour: Neighbour, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_in_process(
        neighbour.version.path.parents[2],
        neighbour.version.dataset_id,
        tmp_path_factory.mktemp("server_b"),
        workers=1,
        max_queued_queries=SERVER_B_QUEUE,
        worker_memory_mb=SERVER_B_WORKER_MB,
    )
    yield server
    assert server.running is not None
    server.running.stop(grace_seconds=1)

"""The servers the adversarial suite attacks, and the figures it reports.

Two in-process servers, started once per session (a worker takes seconds to start):

- `server_a` serves the shared small dataset (10 practices, ~570k rows): races, bad
  input, averaging, repeats, collusion, private data, timing, and the "with the target
  patient" side of the differencing attack. Its 16-query wait queue overflows when 64
  clients race.
- `server_b` serves a neighbouring copy without one patient: the other side of the
  differencing attack, and (one worker, a queue of 2, a 1 GiB worker cap) the limits.

Every test records what it tried in `figures`; the totals are printed at the end of the
run, and written as JSON to $DPGATE_ADVERSARIAL_FIGURES when that is set (bench/ reads it).
"""

from __future__ import annotations

import json
import os
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from dpgate_server.store.store import DatasetVersion
from tests.adversarial.helpers import (
    FULL_RUN,
    Neighbour,
    Server,
    heaviest_patient,
    publish_without_patient,
    start_in_process,
)

SERVER_A_QUEUE = 16
SERVER_B_WORKER_MB = 1024
SERVER_B_QUEUE = 2


class Figures:
    """Thread-safe tallies of what the suite tried and what it measured."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts: Counter[str] = Counter()
        self.values: dict[str, object] = {}

    def add(self, name: str, amount: int = 1) -> None:
        with self._lock:
            self.counts[name] += amount

    def set(self, name: str, value: object) -> None:
        with self._lock:
            self.values[name] = value

    def lines(self) -> list[str]:
        with self._lock:
            rows = [f"{k}: {v}" for k, v in sorted(self.counts.items())]
            rows += [f"{k}: {v}" for k, v in sorted(self.values.items())]
        return rows


FIGURES_KEY = pytest.StashKey[Figures]()


@pytest.fixture(scope="session")
def figures(request: pytest.FixtureRequest) -> Figures:
    stash = request.config.stash
    if FIGURES_KEY not in stash:
        stash[FIGURES_KEY] = Figures()
    return stash[FIGURES_KEY]


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    found = terminalreporter.config.stash.get(FIGURES_KEY, None)
    if found is None:
        return
    mode = "full run (DPGATE_FULL_RUN=1)" if FULL_RUN else "bounded default run"
    terminalreporter.section(f"adversarial figures, {mode}")
    for line in found.lines():
        terminalreporter.write_line(line)
    target = os.environ.get("DPGATE_ADVERSARIAL_FIGURES")
    if target:
        with found._lock:
            data = {"full_run": FULL_RUN, **found.counts, **found.values}
        Path(target).write_text(json.dumps(data, indent=1, sort_keys=True, default=str))


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

"""Helpers for tests of the answerer over a real ledger: a tiny store, an in-process engine."""

from __future__ import annotations

from pathlib import Path

from dpgate_server.answers import CacheSizes, QueryAnswerer
from dpgate_server.ledger.ledger import Ledger
from dpgate_server.queries import PreparedQuery, engine
from dpgate_server.queries.process_settings import configure_process
from dpgate_server.store.store import DatasetStore
from tests.unit.queries.conftest import HUGE_LIMITS, publish, tiny_frame, tiny_metadata

DATASET = "gp_appointments"
"""The dataset the ledger fixture (`setup`) has a cap and allocations on."""


class InProcessExecutor:
    """Runs a prepared query in this process (the pool runs the same call in a worker)."""

    def __init__(self, store: DatasetStore) -> None:
        self._store = store
        self.runs = 0

    def execute(self, prepared: PreparedQuery, timeout_s: float) -> bytes:
        self.runs += 1
        version = self._store.open_version(
            prepared.query.dataset_id, prepared.query.dataset_version
        )
        return engine.execute(version, prepared).to_bytes()


def tiny_store(folder: Path, seed: int = 1) -> DatasetStore:
    """A store whose current version of DATASET is the tiny frame (queries' conftest)."""
    configure_process()
    store = DatasetStore(folder)
    publish(store, tiny_metadata(DATASET), tiny_frame(seed=seed), verify=True)
    return store


def answerer_on(
    ledger: Ledger, store: DatasetStore, cache: CacheSizes | None = None
) -> tuple[QueryAnswerer, InProcessExecutor]:
    executor = InProcessExecutor(store)
    return QueryAnswerer(store, ledger, executor, HUGE_LIMITS, 60.0, cache=cache), executor

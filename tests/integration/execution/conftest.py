"""Real worker pools over the session's small dataset."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from dpgate_server.execution import PoolSettings, QueryWorkerPool
from dpgate_server.store.store import DatasetVersion
from tests.integration.execution.helpers import MAX_QUEUE, MEMORY_CAP, RESTART_TIMEOUT_S, WORKERS


@pytest.fixture(scope="module")
def store_root(small_dataset: DatasetVersion, small_dataset_paths: tuple[Path, Path]) -> Path:
    return small_dataset_paths[0]


@pytest.fixture(scope="module")
def started_pool(store_root: Path) -> Iterator[QueryWorkerPool]:
    """Two workers, a queue of four, a memory cap; shared by a module (starting costs seconds)."""
    settings = PoolSettings(
        workers=WORKERS,
        max_queue=MAX_QUEUE,
        memory_limit_bytes=MEMORY_CAP,
        start_timeout_s=RESTART_TIMEOUT_S,
    )
    with QueryWorkerPool(store_root, settings) as started:
        yield started

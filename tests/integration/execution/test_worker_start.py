"""What a freshly started worker has loaded and set, before it runs any query."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from dpgate_server.execution import PoolSettings, Probe, ProbeReport, QueryWorkerPool
from dpgate_server.queries.model import Aggregate, Query, Spend
from dpgate_server.queries.process_settings import STREAMING_VARIABLE
from dpgate_server.store.store import DatasetVersion
from tests.integration.execution.helpers import RESTART_TIMEOUT_S, count_by_practice, prepare

WORKER_NEEDS_NOT = (
    "sklearn",
    "scipy",
    "grpc",
    "google.protobuf",
    "dpgate_server.api",
    "psutil",
    "typer",
    "rich",
    "pydantic",
    "psycopg",
    "starlette",
    "uvicorn",
)
"""Packages a worker never uses at start: `opendp.prelude` pulls in scikit-learn and SciPy
(seconds of start per worker), the server's gRPC layer belongs to the parent alone, only
the parent measures workers' memory (psutil), and the command line, settings, ledger and
web layers are the parent's."""


@pytest.fixture(scope="module")
def fresh_pool(store_root: Path) -> Iterator[QueryWorkerPool]:
    """One worker, started from a parent whose environment lacks the streaming switch.

    A spawned worker inherits its parent's environment, and this test session set the
    switch itself (tests/conftest.py); without it here, only the worker can have set it.
    """
    settings = PoolSettings(workers=1, max_queue=1, start_timeout_s=RESTART_TIMEOUT_S)
    pool = QueryWorkerPool(store_root, settings)
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv(STREAMING_VARIABLE, raising=False)
        pool.start()
    try:
        yield pool
    finally:
        pool.close()


def test_worker_sets_the_engine_switches_at_start(fresh_pool: QueryWorkerPool) -> None:
    settings = json.loads(fresh_pool.run_probe(Probe(report=ProbeReport.SETTINGS), 60.0))
    assert settings["streaming"] == "1"
    assert "contrib" in settings["opendp_features"]


def test_worker_imports_only_what_it_uses(fresh_pool: QueryWorkerPool) -> None:
    modules = set(fresh_pool.run_probe(Probe(report=ProbeReport.MODULES), 60.0).decode().split())
    assert {"polars", "opendp.extras.polars", "dpgate_server.queries.engine"} <= modules
    unused = sorted(
        name
        for name in modules
        for package in WORKER_NEEDS_NOT
        if name == package or name.startswith(package + ".")
    )
    assert unused == []


def _modules(pool: QueryWorkerPool) -> set[str]:
    return set(pool.run_probe(Probe(report=ProbeReport.MODULES), 60.0).decode().split())


def test_first_queries_import_nothing(
    fresh_pool: QueryWorkerPool, small_dataset: DatasetVersion
) -> None:
    """Ready means ready: what the queries need was loaded at start, not by a requester's
    first query (the pool has one worker, so every job here runs on the same one)."""
    at_start = _modules(fresh_pool)
    dataset = small_dataset.dataset_id
    questions = [
        count_by_practice(dataset),
        Query(dataset, Aggregate.count(), spend=Spend.epsilon(1)),
        Query(
            dataset, Aggregate.sum("duration_minutes"), group_by=("month",), spend=Spend.epsilon(1)
        ),
    ]
    for question in questions:
        assert fresh_pool.execute(prepare(small_dataset, question), 60.0)
    assert sorted(_modules(fresh_pool) - at_start) == []

"""What a freshly started worker has loaded and set, before it runs any query."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from dpgate_server.execution import PoolSettings, Probe, ProbeReport, QueryWorkerPool
from dpgate_server.queries.process_settings import STREAMING_VARIABLE
from tests.integration.execution.helpers import RESTART_TIMEOUT_S

WORKER_NEEDS_NOT = (
    "sklearn",
    "scipy",
    "grpc",
    "google.protobuf",
    "dpgate_server.api",
    "psutil",
    "pyarrow",
    "typer",
    "rich",
    "pydantic",
    "psycopg",
    "starlette",
    "uvicorn",
)
"""Packages a worker never uses at start: `opendp.prelude` pulls in scikit-learn and SciPy
(seconds of start per worker), the server's gRPC layer belongs to the parent alone, only
the parent measures workers' memory (psutil), PyArrow is imported by the one query that
reads Parquet footers (an ungrouped, unfiltered count) when it first runs, and the command
line, settings, ledger and web layers are the parent's."""


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

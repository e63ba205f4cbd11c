"""A query worker's memory cap over the wire: refused before it runs when the answer's
cells alone would not fit (queries/memory.py), stopped when the worker passes the cap while
running (the pool's RSS watchdog); either way nothing is charged and the server keeps
serving. The real server, workers, ledger and client.

Making a real query pass the cap deterministically: the estimate refuses anything that
would not fit before it runs, so the query must use memory the estimate does not count,
the rows it reads. A query asking for fewer contributions than the version's bound keeps
k random rows per patient with a window over the patient key, which holds its rows in
memory; on the server below (20 copies of the small dataset, ~11.4M rows, 2 cores) a fresh
worker's SUM by practice x month with 2 contributions peaked at 1.1 GiB, over twice the
cap of 512 MiB (the least `limits.worker_memory_mb` allows), while a plain count peaked
at ~190 MiB and a count by practice at ~250 MiB.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import pytest

from dpgate import Client, DpgateError, InvalidQueryError, QuerySpec, count, total
from dpgate_server.store.store import DatasetVersion
from tests.conftest import SMALL_DATASET_PRACTICES
from tests.support.datasets import publish_copies

from .conftest import Service, start_service

COPIES = 20
WORKER_MEMORY_MB = 512
"""The least the config allows; the watchdog ends a worker past it."""
MAX_CELLS = 10_000_000
"""Far above the grouping below, so only the memory estimate can refuse it."""


@pytest.fixture(scope="module")
def capped(
    small_dataset: DatasetVersion, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    """One worker capped at 512 MiB over ~11.4M rows, with a generous cell limit."""
    base = tmp_path_factory.mktemp("worker_memory")
    version = publish_copies(small_dataset, base / "store", COPIES)
    service = start_service(
        version,
        base,
        workers=1,
        worker_memory_mb=WORKER_MEMORY_MB,
        max_cells=MAX_CELLS,
    )
    yield service
    service.running.stop(grace_seconds=1)


@pytest.fixture
def client(capped: Service) -> Iterator[Client]:
    with Client(capped.target, token=capped.tokens["analyst"], timeout=120) as connected:
        yield connected


def remaining(client: Client, dataset_id: str) -> Decimal:
    [budget] = client.budget(dataset_id)
    return budget.remaining


def light_query(capped: Service, epsilon: str) -> QuerySpec:
    """A count by practice (~250 MiB in a worker); each test asks its own epsilon, so the
    query is new and runs in a worker, not a free repeat answered from the ledger."""
    return count(capped.dataset_id).by("practice_code").epsilon(Decimal(epsilon))


def test_an_answer_too_large_for_a_worker_is_refused_before_it_runs(
    client: Client, capped: Service
) -> None:
    dataset = capped.dataset_id
    before, releases = remaining(client, dataset), client.releases(dataset)
    pool_before = capped.running.pool.stats()
    # 10 practices x 365 days x 24 hours = 87,600 cells of 4 columns: ~1.1 GiB estimated
    huge = count(dataset).by("practice_code", "appointment_date", "hour").epsilon(0.5)

    with pytest.raises(InvalidQueryError) as caught:
        client.query(huge)

    error = caught.value
    assert (error.code, error.reason) == ("INVALID_ARGUMENT", "TOO_MANY_CELLS")
    assert "gives 87,600 cells, which needs about" in error.message
    assert f"a worker may use {WORKER_MEMORY_MB} MiB (limits.worker_memory_mb)" in error.message
    assert "Group by fewer or coarser columns" in error.message
    assert "nothing was charged" in error.message
    assert remaining(client, dataset) == before
    assert client.releases(dataset) == releases
    pool_after = capped.running.pool.stats()
    assert pool_after.completed == pool_before.completed  # no worker ran it
    assert pool_after.crashed == pool_before.crashed
    served = client.query(light_query(capped, "0.25"))
    assert served.frame.height == SMALL_DATASET_PRACTICES
    assert remaining(client, dataset) == before - Decimal("0.25")


def test_a_worker_past_the_cap_is_stopped_nothing_is_charged_and_the_next_query_runs(
    client: Client, capped: Service
) -> None:
    dataset = capped.dataset_id
    before, releases = remaining(client, dataset), client.releases(dataset)
    over_memory = capped.running.pool.stats().over_memory
    # fewer contributions than the version's bound: per-query truncation, rows in memory
    heavy = total(dataset, "duration_minutes").by("practice_code", "month").contributions(2)

    with pytest.raises(DpgateError) as caught:
        client.query(heavy.epsilon(0.5))

    error = caught.value
    assert (error.code, error.reason) == ("INTERNAL", "WORKER_FAILED")
    assert (
        f"needed more memory than a query worker may use ({WORKER_MEMORY_MB} MiB) and was "
        "stopped" in error.message
    )
    assert capped.running.pool.stats().over_memory == over_memory + 1
    assert remaining(client, dataset) == before
    assert client.releases(dataset) == releases
    served = client.query(light_query(capped, "0.3"))  # waits for the replacement worker
    assert served.frame.height == SMALL_DATASET_PRACTICES
    assert remaining(client, dataset) == before - Decimal("0.3")
    assert len(client.releases(dataset)) == len(releases) + 1

"""Constants and helpers shared by the execution integration tests."""

from __future__ import annotations

import time
from collections.abc import Callable

from dpgate_server.execution import PoolStats, QueryWorkerPool
from dpgate_server.queries import engine
from dpgate_server.queries.limits import QueryLimits
from dpgate_server.queries.model import Aggregate, Query, Spend
from dpgate_server.store.store import DatasetVersion

MEMORY_CAP = 768 * 2**20
"""Well above a worker's resident memory on the small dataset (~350 MB after a query)."""
WORKERS = 2
MAX_QUEUE = 4
LIMITS = QueryLimits()
RESTART_TIMEOUT_S = 90.0
"""Generous: a worker imports OpenDP and Polars (seconds, more on a loaded machine)."""


def count_by_practice(dataset_id: str, epsilon: float = 1.0) -> Query:
    return Query(
        dataset_id, Aggregate.count(), group_by=("practice_code",), spend=Spend.epsilon(epsilon)
    )


def prepare(version: DatasetVersion, query: Query) -> engine.PreparedQuery:
    """`query` checked and priced on `version`, as the server does before using the pool."""
    return engine.prepare(version, query, LIMITS)


def wait_for(
    pool: QueryWorkerPool, condition: Callable[[PoolStats], bool], timeout_s: float = 10.0
) -> PoolStats:
    """Poll the pool's stats until `condition` holds; fail with the last stats if it never does."""
    deadline = time.monotonic() + timeout_s
    while True:
        stats = pool.stats()
        if condition(stats):
            return stats
        if time.monotonic() > deadline:
            raise AssertionError(f"the pool never reached the expected state: {stats}")
        time.sleep(0.01)


def is_whole(stats: PoolStats) -> bool:
    """Every worker alive and idle, nothing starting or waiting."""
    return (
        stats.alive == stats.workers
        and stats.busy == 0
        and stats.starting == 0
        and stats.waiting == 0
    )

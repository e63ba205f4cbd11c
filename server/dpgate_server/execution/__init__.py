"""Query workers: a bounded pool of processes that answer queries (no grpc here).

Public surface (what the API layer calls)::

    pool = QueryWorkerPool(store_root, PoolSettings(workers=2, max_queue=8,
                                                    memory_limit_bytes=3 * 2**30))
    pool.start()                       # spawn workers, wait until each is ready
    payload = pool.execute(prepared, timeout_s)   # engine.prepare's PreparedQuery
    pool.stats()                       # PoolStats snapshot, for health and benchmarks
    pool.close()                       # at shutdown; idempotent

Errors (see `errors`): PoolOverloaded(retry_after_s), QueryDeadlineExceeded(timeout_s),
WorkerFailed(message), PoolClosed, WorkerStartError; the engine's and store's own errors
are re-raised as themselves.
"""

from dpgate_server.execution.errors import (
    ExecutionError,
    PoolClosed,
    PoolOverloaded,
    QueryDeadlineExceeded,
    WorkerFailed,
    WorkerOverMemory,
    WorkerStartError,
)
from dpgate_server.execution.messages import Probe, ProbeReport
from dpgate_server.execution.pool import PoolStats, QueryWorkerPool
from dpgate_server.execution.settings import PoolSettings

__all__ = [
    "ExecutionError",
    "PoolClosed",
    "PoolOverloaded",
    "PoolSettings",
    "PoolStats",
    "Probe",
    "ProbeReport",
    "QueryDeadlineExceeded",
    "QueryWorkerPool",
    "WorkerFailed",
    "WorkerOverMemory",
    "WorkerStartError",
]

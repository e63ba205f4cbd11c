"""Closing the pool (server shutdown) ends every query and every worker."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest

from dpgate_server.execution import PoolClosed, PoolSettings, Probe, QueryWorkerPool
from tests.integration.execution.helpers import RESTART_TIMEOUT_S, wait_for


def test_close_ends_running_and_waiting_queries_and_every_worker(store_root: Path) -> None:
    pool = QueryWorkerPool(
        store_root, PoolSettings(workers=1, max_queue=1, start_timeout_s=RESTART_TIMEOUT_S)
    )
    pool.start()
    (pid,) = pool.stats().worker_pids
    with ThreadPoolExecutor(2) as executor:
        running = executor.submit(pool.run_probe, Probe(sleep_s=60.0), 120.0)
        wait_for(pool, lambda s: s.busy == 1)
        waiting = executor.submit(pool.run_probe, Probe(), 120.0)
        wait_for(pool, lambda s: s.waiting == 1)

        pool.close()

        with pytest.raises(PoolClosed):
            running.result(timeout=10)
        with pytest.raises(PoolClosed):
            waiting.result(timeout=10)
    assert not psutil.pid_exists(pid)
    assert pool.stats().alive == 0
    pool.close()  # idempotent
    with pytest.raises(PoolClosed):
        pool.run_probe(Probe(), 1.0)

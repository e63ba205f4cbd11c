"""QueryWorkerPool with real worker processes: answers, queue, deadlines, deaths, memory."""

from __future__ import annotations

import dataclasses
import os
import signal
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

from dpgate_server.execution import (
    PoolOverloaded,
    Probe,
    QueryDeadlineExceeded,
    QueryWorkerPool,
    WorkerFailed,
    WorkerOverMemory,
)
from dpgate_server.queries import engine
from dpgate_server.queries.errors import CostMismatchError
from dpgate_server.queries.model import Release
from dpgate_server.store.store import DatasetVersion
from dpgate_server.vocabulary.errors import DatasetNotFoundError
from tests.integration.execution.helpers import (
    MAX_QUEUE,
    RESTART_TIMEOUT_S,
    WORKERS,
    count_by_practice,
    is_whole,
    prepare,
    wait_for,
)

NOISE_BOUND = 24 * 40
"""Two Laplace(24) draws (k=24, epsilon 1) differ by more with probability below 1e-16."""


@pytest.fixture
def pool(started_pool: QueryWorkerPool) -> QueryWorkerPool:
    """The module's pool once every worker is alive and idle (earlier tests end some)."""
    wait_for(started_pool, is_whole, RESTART_TIMEOUT_S)
    return started_pool


GATE_CAP_S = 60.0
"""A gated probe ends by itself after this long (only if a test failed to open its gate)."""


def _occupy_every_worker(
    pool: QueryWorkerPool, executor: ThreadPoolExecutor, gate: Path
) -> list[Future[bytes]]:
    """Keep every worker busy until a file appears at `gate` (the test creates it)."""
    probe = Probe(sleep_s=GATE_CAP_S, until_path=str(gate))
    futures = [executor.submit(pool.run_probe, probe, 2 * GATE_CAP_S) for _ in range(WORKERS)]
    wait_for(pool, lambda s: s.busy == WORKERS)
    return futures


def test_answer_matches_engine_run_structurally(
    pool: QueryWorkerPool, small_dataset: DatasetVersion
) -> None:
    prepared = prepare(small_dataset, count_by_practice(small_dataset.dataset_id))
    direct = engine.execute(small_dataset, prepared)

    payload = pool.execute(prepared, 60.0)

    pooled = Release.from_bytes(payload)
    assert pooled.key == direct.key
    assert pooled.query == direct.query
    assert [c.key for c in pooled.cells] == [c.key for c in direct.cells]
    assert len(pooled.cells) == 10
    assert (pooled.mechanism, pooled.noise_scale, pooled.cost_units, pooled.half_width) == (
        direct.mechanism,
        direct.noise_scale,
        direct.cost_units,
        direct.half_width,
    )
    for mine, theirs in zip(pooled.cells, direct.cells, strict=True):
        assert abs(mine.value - theirs.value) < NOISE_BOUND
        assert mine.ci_high - mine.ci_low == theirs.ci_high - theirs.ci_low


def test_concurrent_callers_each_get_their_own_answer(
    pool: QueryWorkerPool, small_dataset: DatasetVersion
) -> None:
    prepared = [
        prepare(small_dataset, count_by_practice(small_dataset.dataset_id, epsilon=1 + i / 10))
        for i in range(WORKERS + MAX_QUEUE)
    ]
    keys = [p.key for p in prepared]
    with ThreadPoolExecutor(len(prepared)) as executor:
        futures = [executor.submit(pool.execute, p, 120.0) for p in prepared]
        releases = [Release.from_bytes(f.result()) for f in futures]
    assert [r.key for r in releases] == keys
    assert len(set(keys)) == len(keys)


def test_full_queue_refuses_at_once_with_retry_hint(pool: QueryWorkerPool, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    with ThreadPoolExecutor(WORKERS + MAX_QUEUE) as executor:
        running = _occupy_every_worker(pool, executor, gate)
        waiting = [executor.submit(pool.run_probe, Probe(), 60.0) for _ in range(MAX_QUEUE)]
        wait_for(pool, lambda s: s.waiting == MAX_QUEUE)
        rejected_before = pool.stats().rejected

        with pytest.raises(PoolOverloaded) as refused:
            pool.run_probe(Probe(), 60.0)

        # Refused without waiting for a worker: every worker is still held by the gate and
        # everyone admitted is still queued (a call that waited would have timed out instead).
        during = pool.stats()
        assert not any(future.done() for future in [*running, *waiting])
        assert (during.busy, during.waiting) == (WORKERS, MAX_QUEUE)
        assert refused.value.retry_after_s >= 1.0
        assert during.rejected == rejected_before + 1
        gate.touch()
        for future in [*running, *waiting]:
            assert future.result().isdigit()  # everyone admitted is still served


def test_deadline_passing_in_the_queue_kills_no_worker(
    pool: QueryWorkerPool, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    with ThreadPoolExecutor(WORKERS) as executor:
        running = _occupy_every_worker(pool, executor, gate)
        before = pool.stats()

        with pytest.raises(QueryDeadlineExceeded) as exceeded:
            pool.run_probe(Probe(), 0.3)

        # It waited in the queue (not refused as overloaded) and gave up there: the
        # workers it waited for are still busy, none was killed, the queue is empty again.
        during = pool.stats()
        assert exceeded.value.timeout_s == 0.3
        assert not any(future.done() for future in running)
        assert (during.busy, during.waiting, during.rejected) == (WORKERS, 0, before.rejected)
        gate.touch()
        for future in running:
            assert future.result().isdigit()
    after = pool.stats()
    assert (after.killed, after.worker_pids) == (before.killed, before.worker_pids)


def test_unknown_version_raises_dataset_not_found(
    pool: QueryWorkerPool, small_dataset: DatasetVersion
) -> None:
    prepared = prepare(small_dataset, count_by_practice(small_dataset.dataset_id))
    elsewhere = dataclasses.replace(
        prepared, query=dataclasses.replace(prepared.query, dataset_version="v999999")
    )
    with pytest.raises(DatasetNotFoundError):
        pool.execute(elsewhere, 60)


def test_cost_below_opendps_raises_cost_mismatch_in_the_caller(
    pool: QueryWorkerPool, small_dataset: DatasetVersion
) -> None:
    # The worker runs the query as prepared, and still cross-checks its cost with OpenDP.
    prepared = prepare(small_dataset, count_by_practice(small_dataset.dataset_id))
    calibration = prepared.calibration
    underpriced = dataclasses.replace(
        prepared,
        calibration=dataclasses.replace(calibration, cost_units=calibration.cost_units // 2),
    )
    with pytest.raises(CostMismatchError):
        pool.execute(underpriced, 60)


def test_unexpected_worker_error_is_worker_failed_without_its_detail(
    pool: QueryWorkerPool,
) -> None:
    before = pool.stats()
    with pytest.raises(WorkerFailed) as failed:
        pool.run_probe(Probe(fail_with="secret detail"), 10.0)
    assert "secret detail" not in str(failed.value)
    assert "Traceback" not in str(failed.value)
    after = pool.stats()
    assert (after.crashed, after.worker_pids) == (before.crashed, before.worker_pids)


# Tests that end workers come last: each starts a replacement, which takes seconds.


def test_query_past_its_deadline_is_cancelled_and_its_worker_replaced(
    pool: QueryWorkerPool, small_dataset: DatasetVersion
) -> None:
    before = pool.stats()

    with pytest.raises(QueryDeadlineExceeded) as exceeded:
        pool.run_probe(Probe(sleep_s=60.0), 0.5)

    assert exceeded.value.timeout_s == 0.5
    during = pool.stats()
    assert during.killed == before.killed + 1
    assert during.completed == before.completed  # ended, not answered
    assert len(set(before.worker_pids) - set(during.worker_pids)) == 1  # the worker is gone
    assert during.starting + during.alive == WORKERS  # and its replacement under way (or done)
    after = wait_for(pool, is_whole, RESTART_TIMEOUT_S)
    assert len(set(before.worker_pids) - set(after.worker_pids)) == 1
    prepared = prepare(small_dataset, count_by_practice(small_dataset.dataset_id))
    payload = pool.execute(prepared, 60)
    assert Release.from_bytes(payload).key == prepared.key


def test_worker_killed_from_outside_is_replaced(pool: QueryWorkerPool) -> None:
    before = pool.stats()
    victim = before.worker_pids[0]

    os.kill(victim, signal.SIGKILL)
    after = wait_for(pool, lambda s: s.crashed == before.crashed + 1)

    assert victim not in after.worker_pids
    assert after.starting + after.alive == WORKERS  # the replacement is under way (or done)
    answered = {int(pool.run_probe(Probe(), RESTART_TIMEOUT_S)) for _ in range(2 * WORKERS)}
    assert victim not in answered


def test_worker_past_the_memory_cap_fails_and_is_replaced(started_pool: QueryWorkerPool) -> None:
    pool = started_pool  # one idle worker is enough: the last replacement may still start
    before = wait_for(pool, lambda s: s.alive > 0 and s.busy == 0, RESTART_TIMEOUT_S)

    with pytest.raises(WorkerOverMemory, match="needed more memory than a query worker may use"):
        pool.run_probe(Probe(allocate_bytes=2**30, sleep_s=30.0), 30.0)

    after = pool.stats()
    assert after.over_memory == before.over_memory + 1
    assert len(set(before.worker_pids) - set(after.worker_pids)) == 1
    assert after.starting + after.alive == WORKERS  # the replacement is under way (or done)

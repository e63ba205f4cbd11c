"""A pool of query worker processes fed by a bounded wait queue.

Why processes: a query holds the CPU for up to seconds in Polars and OpenDP and may need
gigabytes; in its own process it can be ended at a deadline (SIGKILL is the only way to
stop a running Polars plan), capped in memory, and it never holds the GIL that the
server's gRPC threads need. Workers are started with "spawn", never "fork": the server
already runs gRPC and Polars threads, and a forked copy of a threaded process can
deadlock on a lock some other thread held.

Guarantees:

* `execute` blocks the calling thread until a worker is free; at most `max_queue` callers
  wait (first come, first served); one more is refused at once with `PoolOverloaded`.
* A query has no answer after `timeout_s` (waiting included): its worker is SIGKILLed, so
  no answer can come later, and `QueryDeadlineExceeded` is raised.
* A worker that dies (killed, crashed, past the memory cap) is replaced in a background
  thread, so the caller that saw it die is not delayed by the new worker's start.
* Memory: a watchdog thread samples every worker's resident memory (RSS, via psutil)
  each `watch_interval_s` and SIGKILLs a worker past `memory_limit_bytes`; the query gets
  `WorkerFailed`. `setrlimit` was measured and rejected: with OpenDP and Polars loaded, a
  worker reserves far more address space than it uses (RLIMIT_AS counts 2.9 GB of
  address space and RLIMIT_DATA 1.4 GB of private mappings for 0.27 GB resident after one
  small query; under RLIMIT_AS = 2 GiB a 200 MB allocation already failed at 0.35 GB
  resident), so either limit would refuse queries that fit well in memory, by an amount
  that grows with the machine's thread count. The RSS cap is soft by one sampling interval
  of allocation: a worker touching memory as fast as it can was ended at ~70 MB past a
  512 MiB cap; allow that much headroom below the machine's memory.

Errors raised in a worker by the engine or store (`InvalidQuery`, `CostMismatchError`,
`EngineError`, `DatasetNotFoundError`) are re-raised in the caller as themselves;
anything else is logged here with its traceback and raised as `WorkerFailed` without it.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import statistics
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from dpgate_server.execution.errors import (
    PoolClosed,
    PoolOverloaded,
    QueryDeadlineExceeded,
    WorkerFailed,
    WorkerOverMemory,
    WorkerStartError,
)
from dpgate_server.execution.messages import (
    Done,
    Failed,
    Job,
    Probe,
    QueryJob,
    Refused,
    rebuild_error,
)
from dpgate_server.execution.process import Ended, WorkerProcess
from dpgate_server.execution.settings import PoolSettings
from dpgate_server.queries.engine import PreparedQuery

_log = logging.getLogger(__name__)

_RECENT_JOBS = 32
"""Job durations kept for the retry hint's mean."""
_ASSUMED_JOB_S = 1.0
"""Mean job time assumed before any job has finished."""
_MIN_RETRY_AFTER_S = 1.0
_STOP_GRACE_S = 2.0
"""How long an idle worker has to exit after STOP before it is killed."""
_JOIN_TIMEOUT_S = 5.0
_RESTART_BACKOFF_S = (0.5, 10.0)
"""First and longest wait between failed attempts to start a replacement."""


@dataclass(frozen=True, slots=True)
class PoolStats:
    """A snapshot of the pool, for health checks and benchmarks.

    Attributes:
        workers: configured number of workers.
        alive: worker processes running (idle or busy).
        busy: workers running a job.
        starting: replacement workers not yet ready.
        waiting: callers waiting for a free worker.
        completed: jobs that returned (an answer or a domain error).
        killed: workers ended at a query's deadline.
        crashed: workers that died otherwise (crashed, killed from outside, out of memory).
        over_memory: of `crashed`, the workers the watchdog ended past the memory cap.
        rejected: callers refused with PoolOverloaded.
        mean_job_s: mean duration of the recent jobs, None before the first.
        start_s: how long `start()` took to get every worker ready, None before.
        worker_pids: process ids of the alive workers, sorted.
    """

    workers: int
    alive: int
    busy: int
    starting: int
    waiting: int
    completed: int
    killed: int
    crashed: int
    over_memory: int
    rejected: int
    mean_job_s: float | None
    start_s: float | None
    worker_pids: tuple[int, ...]


class QueryWorkerPool:
    """Runs queries in worker processes; thread-safe (many gRPC threads call `execute`).

    Example::

        with QueryWorkerPool(store_root, PoolSettings(workers=2, max_queue=8)) as pool:
            payload = pool.execute(engine.prepare(version, query), 30.0)
            release = Release.from_bytes(payload)
    """

    def __init__(self, store_root: Path, settings: PoolSettings) -> None:
        self._store_root = store_root
        self._settings = settings
        self._context = multiprocessing.get_context("spawn")
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._closing = threading.Event()
        self._idle: deque[WorkerProcess] = deque()
        self._busy: set[WorkerProcess] = set()
        self._launching: set[WorkerProcess] = set()
        self._waiting: deque[object] = deque()
        self._threads: set[threading.Thread] = set()
        self._recent: deque[float] = deque(maxlen=_RECENT_JOBS)
        self._started = False
        self._closed = False
        self._starting = 0
        self._completed = 0
        self._killed = 0
        self._crashed = 0
        self._over_memory = 0
        self._rejected = 0
        self._start_s: float | None = None

    @property
    def settings(self) -> PoolSettings:
        return self._settings

    def start(self) -> None:
        """Spawn every worker and wait until each has imported the engine and is ready.

        Raises:
            WorkerStartError: a worker exited or was not ready within `start_timeout_s`
                (every worker started is then ended and the pool is closed).
        """
        with self._lock:
            if self._started or self._closed:
                raise RuntimeError("a QueryWorkerPool starts once")
            self._started = True
        began = time.monotonic()
        deadline = began + self._settings.start_timeout_s
        launched: list[WorkerProcess] = []
        try:
            for _ in range(self._settings.workers):
                launched.append(WorkerProcess.launch(self._context, self._store_root))
            for worker in launched:
                worker.wait_ready(deadline)
        except BaseException:
            for worker in launched:
                worker.dispose()
            self.close()
            raise
        watchdog = threading.Thread(target=self._watch, name="dpgate-pool-watchdog", daemon=True)
        with self._changed:
            self._start_s = time.monotonic() - began
            self._idle.extend(launched)
            self._threads.add(watchdog)
            self._changed.notify_all()
        watchdog.start()
        _log.info(
            "%d query workers ready in %.1f s (memory cap %s)",
            len(launched),
            self._start_s,
            _describe_bytes(self._settings.memory_limit_bytes),
        )

    def execute(self, prepared: PreparedQuery, timeout_s: float) -> bytes:
        """Run `prepared` in a worker, on the version it was prepared for: the release bytes.

        The worker does not prepare the query again: it computes exactly what the caller
        priced, under `prepared.key`. Blocks until a worker is free.

        Raises:
            PoolOverloaded: every worker busy and the queue full (at once, nothing ran).
            QueryDeadlineExceeded: no answer within `timeout_s` (the worker was ended).
            WorkerFailed: the worker crashed, passed the memory cap, or failed unexpectedly.
            PoolClosed: the pool was closed.
            InvalidQuery, CostMismatchError, EngineError, DatasetNotFoundError: as raised
                by the engine or the store in the worker.
        """
        return self._run(QueryJob(prepared), timeout_s)

    def run_probe(self, probe: Probe, timeout_s: float) -> bytes:
        """Run a data-free `Probe` job through the same queue, deadline and cap (tests, bench).

        Answers the pid of the worker that ran it, as ASCII digits.
        """
        return self._run(probe, timeout_s)

    def stats(self) -> PoolStats:
        with self._lock:
            return PoolStats(
                workers=self._settings.workers,
                alive=len(self._idle) + len(self._busy),
                busy=len(self._busy),
                starting=self._starting,
                waiting=len(self._waiting),
                completed=self._completed,
                killed=self._killed,
                crashed=self._crashed,
                over_memory=self._over_memory,
                rejected=self._rejected,
                mean_job_s=statistics.fmean(self._recent) if self._recent else None,
                start_s=self._start_s,
                worker_pids=tuple(sorted(w.pid for w in (*self._idle, *self._busy))),
            )

    def close(self) -> None:
        """End every worker (idle ones cleanly, running queries by SIGKILL); idempotent.

        Callers still waiting or running get PoolClosed; nothing is replaced afterwards.
        """
        with self._changed:
            if self._closed:
                return
            self._closed = True
            self._closing.set()
            idle = list(self._idle)
            self._idle.clear()
            running = [*self._busy, *self._launching]
            threads = list(self._threads)
            self._changed.notify_all()
        for worker in running:
            worker.kill()
        for worker in idle:
            worker.stop(_STOP_GRACE_S)
        for thread in threads:
            if thread is not threading.current_thread():
                thread.join(_JOIN_TIMEOUT_S)

    def __enter__(self) -> QueryWorkerPool:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # -- one job ---------------------------------------------------------------------

    def _run(self, job: Job, timeout_s: float) -> bytes:
        if not (timeout_s > 0 and math.isfinite(timeout_s)):
            raise ValueError(f"timeout_s must be a positive number of seconds, not {timeout_s}")
        deadline = time.monotonic() + timeout_s
        worker = self._acquire(deadline, timeout_s)
        began = time.monotonic()
        try:
            outcome = worker.run(job, deadline)
        except BaseException:
            self._retire(worker, killed=False)
            raise
        if isinstance(outcome, Done):
            self._release(worker, began)
            return outcome.payload
        if isinstance(outcome, Refused):
            self._release(worker, began)
            raise rebuild_error(outcome)
        if isinstance(outcome, Failed):
            return self._failed(worker, outcome, began)
        self._retire(worker, killed=outcome is Ended.TIMED_OUT)
        if outcome is Ended.TIMED_OUT:
            raise QueryDeadlineExceeded(timeout_s)
        if self._closing.is_set():
            raise PoolClosed()
        if worker.over_memory:
            raise WorkerOverMemory(self._settings.memory_limit_bytes)
        raise WorkerFailed()

    def _failed(self, worker: WorkerProcess, failure: Failed, began: float) -> bytes:
        if failure.fatal:  # the worker exits after this reply (it ran out of memory)
            self._retire(worker, killed=False)
            raise WorkerOverMemory(None)
        _log.error("query worker %d failed unexpectedly:\n%s", worker.pid, failure.detail)
        self._release(worker, began)
        raise WorkerFailed(f"the query failed unexpectedly in its worker ({failure.type_name})")

    def _acquire(self, deadline: float, timeout_s: float) -> WorkerProcess:
        """An idle worker, now or after waiting in line; marks it busy."""
        with self._changed:
            self._check_open()
            if not self._waiting:
                worker = self._take_idle()
                if worker is not None:
                    return worker
            if len(self._waiting) >= self._settings.max_queue:
                self._rejected += 1
                raise PoolOverloaded(self._retry_after())
            ticket = object()
            self._waiting.append(ticket)
            try:
                while True:
                    self._check_open()
                    if self._waiting[0] is ticket:
                        worker = self._take_idle()
                        if worker is not None:
                            return worker
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise QueryDeadlineExceeded(timeout_s)
                    self._changed.wait(remaining)
            finally:
                self._waiting.remove(ticket)
                self._changed.notify_all()  # the next in line may now be first

    def _check_open(self) -> None:
        if self._closed:
            raise PoolClosed()
        if not self._started:
            raise RuntimeError("start() the QueryWorkerPool before executing queries")

    def _take_idle(self) -> WorkerProcess | None:
        """Pop a live idle worker (replacing dead ones found on the way); lock held."""
        while self._idle:
            worker = self._idle.popleft()
            if worker.is_alive():
                self._busy.add(worker)
                return worker
            self._end_idle(worker)
        return None

    def _retry_after(self) -> float:
        """Seconds until the queue has likely moved past this caller: at least 1."""
        mean = statistics.fmean(self._recent) if self._recent else _ASSUMED_JOB_S
        return max(_MIN_RETRY_AFTER_S, mean * len(self._waiting) / self._settings.workers)

    def _release(self, worker: WorkerProcess, began: float) -> None:
        """Return a worker that answered to the idle set (or stop it if the pool closed)."""
        with self._changed:
            self._busy.discard(worker)
            self._completed += 1
            self._recent.append(time.monotonic() - began)
            if not self._closed:
                self._idle.append(worker)
                self._changed.notify_all()
                return
        worker.stop(_STOP_GRACE_S)

    def _retire(self, worker: WorkerProcess, *, killed: bool) -> None:
        """End a busy worker (deadline, death, unexpected error) and replace it."""
        worker.kill()
        with self._changed:
            self._busy.discard(worker)
            if killed:
                self._killed += 1
            else:
                self._count_death(worker)
            if not self._closed:
                self._replace_later()
        worker.dispose()
        if not killed:
            _log.warning(
                "query worker %d died (exit code %s); replacing it", worker.pid, worker.exitcode
            )

    def _end_idle(self, worker: WorkerProcess) -> None:
        """Dispose of an idle worker found dead and replace it; lock held, not in _idle."""
        self._count_death(worker)
        worker.dispose()  # already dead: reaping is immediate
        _log.warning(
            "idle query worker %d died (exit code %s); replacing it", worker.pid, worker.exitcode
        )
        if not self._closed:
            self._replace_later()

    def _count_death(self, worker: WorkerProcess) -> None:
        self._crashed += 1
        if worker.over_memory:
            self._over_memory += 1

    # -- replacement and watchdog ----------------------------------------------------

    def _replace_later(self) -> None:
        """Start a replacement worker in a background thread; lock held."""
        self._starting += 1
        thread = threading.Thread(target=self._replace, name="dpgate-pool-replace", daemon=True)
        self._threads.add(thread)
        thread.start()

    def _replace(self) -> None:
        """Start one worker and add it to the idle set, retrying with backoff until closed."""
        backoff, longest = _RESTART_BACKOFF_S
        try:
            while not self._closing.is_set():
                try:
                    worker = self._launch_tracked()
                except Exception as exc:  # keep trying: the pool is short of a worker
                    if self._closing.is_set():  # close() ended it while it started
                        return
                    _log.error("could not start a replacement query worker: %s", exc)
                    self._closing.wait(backoff)
                    backoff = min(2 * backoff, longest)
                    continue
                if worker is not None:
                    with self._changed:
                        self._launching.discard(worker)
                        if not self._closed:
                            self._idle.append(worker)
                            self._changed.notify_all()
                            return
                    worker.stop(_STOP_GRACE_S)
                return
        finally:
            with self._changed:
                self._starting -= 1
                self._threads.discard(threading.current_thread())
                self._changed.notify_all()

    def _launch_tracked(self) -> WorkerProcess | None:
        """Launch a worker that close() can kill while it starts; None if closed."""
        worker = WorkerProcess.launch(self._context, self._store_root)
        with self._lock:
            closed = self._closed
            if not closed:
                self._launching.add(worker)
        if closed:
            worker.dispose()
            return None
        try:
            worker.wait_ready(time.monotonic() + self._settings.start_timeout_s)
        except WorkerStartError:
            with self._lock:
                self._launching.discard(worker)
            raise
        return worker

    def _watch(self) -> None:
        """Every interval: end workers past the memory cap; replace idle workers that died."""
        limit = self._settings.memory_limit_bytes
        while not self._closing.wait(self._settings.watch_interval_s):
            with self._lock:
                workers = [*self._idle, *self._busy]
            if limit is not None:
                for worker in workers:
                    rss = worker.rss_bytes()
                    if rss is not None and rss > limit:
                        _log.warning(
                            "query worker %d uses %s, past the cap of %s; ending it",
                            worker.pid,
                            _describe_bytes(rss),
                            _describe_bytes(limit),
                        )
                        worker.over_memory = True
                        worker.kill()
            with self._changed:
                for worker in [w for w in self._idle if not w.is_alive()]:
                    self._idle.remove(worker)
                    self._end_idle(worker)


def _describe_bytes(count: int | None) -> str:
    return "none" if count is None else f"{count / 2**20:,.0f} MiB"

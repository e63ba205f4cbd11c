"""How the query worker pool is sized and bounded."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class PoolSettings:
    """Size and limits of a `QueryWorkerPool`.

    Attributes:
        workers: worker processes, each running one query at a time.
        max_queue: callers that may wait for a free worker; one more is refused at once
            with PoolOverloaded (0: refuse whenever every worker is busy).
        memory_limit_bytes: resident memory (RSS) a worker may use, imports included
            (~160 MB idle, ~350 MB after a small query); past it the worker is ended
            and the query fails. None: no cap.
        start_timeout_s: longest a worker may take to import the engine and say ready
            (a few seconds; more on a loaded machine).
        watch_interval_s: how often the watchdog samples each worker's RSS and
            notices idle workers that died.
    """

    workers: int
    max_queue: int
    memory_limit_bytes: int | None = None
    start_timeout_s: float = 60.0
    watch_interval_s: float = 0.1

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ValueError(f"workers must be at least 1, not {self.workers}")
        if self.max_queue < 0:
            raise ValueError(f"max_queue must be at least 0, not {self.max_queue}")
        if self.memory_limit_bytes is not None and self.memory_limit_bytes <= 0:
            raise ValueError("memory_limit_bytes must be positive (or None for no cap)")
        if not self.start_timeout_s > 0:
            raise ValueError("start_timeout_s must be positive")
        if not self.watch_interval_s > 0:
            raise ValueError("watch_interval_s must be positive")

"""The execution pool's exceptions, documented in one place.

Domain errors raised while a query runs in a worker (`InvalidQuery`, `CostMismatchError`,
`EngineError`, `DatasetNotFoundError`) reach the caller as themselves; these are the pool's
own, each with its `ErrorReason` (the API layer's table gives the status code):

=======================  ===================================================================
PoolOverloaded           every worker is busy and `max_queue` callers already wait;
                         OVERLOADED with `retry_after_seconds`
QueryDeadlineExceeded    no answer within the timeout; the worker was ended, nothing read
                         from it, so nothing may be charged; QUERY_TIMEOUT
WorkerFailed             the worker crashed, ran past the memory cap, or raised something
                         unexpected (logged on the server, never in the message);
                         WORKER_FAILED
WorkerOverMemory         (a WorkerFailed) the query needed more memory than a worker may
                         use and was stopped; WORKER_FAILED, saying so
PoolClosed               the pool is shutting down; SHUTTING_DOWN
WorkerStartError         `start()` could not get its workers ready (a server start failure)
=======================  ===================================================================
"""

from __future__ import annotations

from dpgate_server.vocabulary.errors import DomainError, ErrorReason

CRASH_MESSAGE = "the query worker ran out of memory or crashed"


class ExecutionError(DomainError):
    """Base of every error the execution pool raises on purpose."""


class PoolOverloaded(ExecutionError):
    """No worker is free and the wait queue is full; refused at once, nothing ran.

    Attributes:
        retry_after_s: a hint, in seconds (at least 1), for when a retry may be served.
    """

    reason = ErrorReason.OVERLOADED

    def __init__(self, retry_after_s: float) -> None:
        super().__init__(
            f"every query worker is busy and the queue is full; retry in {retry_after_s:.0f} s",
            {"retry_after_seconds": f"{retry_after_s:.3f}"},
        )
        self.retry_after_s = retry_after_s


class QueryDeadlineExceeded(ExecutionError):
    """The query had no answer within its timeout (waiting for a worker included).

    The worker running it, if any, was ended (SIGKILL) and replaced, so no answer can
    arrive later: the query must be charged nothing.

    Attributes:
        timeout_s: the timeout that passed.
    """

    reason = ErrorReason.QUERY_TIMEOUT

    def __init__(self, timeout_s: float) -> None:
        super().__init__(
            f"the query ran longer than {timeout_s:g} s and was cancelled; nothing was "
            "charged. Ask for fewer cells or a narrower filter"
        )
        self.timeout_s = timeout_s


class WorkerFailed(ExecutionError):
    """The worker died (out of memory, killed) or failed unexpectedly; no answer.

    The message is safe to show a requester: it never carries a traceback or the
    original exception's text, which are logged on the server instead.
    """

    reason = ErrorReason.WORKER_FAILED

    def __init__(self, message: str = CRASH_MESSAGE) -> None:
        super().__init__(message)


class WorkerOverMemory(WorkerFailed):
    """The query needed more memory than a worker may use: the worker was stopped (ended
    by the watchdog, or out of memory) and replaced; no answer, so nothing is charged.

    Attributes:
        limit_bytes: the cap it passed (None: the process itself ran out of memory).
    """

    def __init__(self, limit_bytes: int | None) -> None:
        cap = "" if limit_bytes is None else f" ({limit_bytes / 2**20:,.0f} MiB)"
        super().__init__(
            f"the query needed more memory than a query worker may use{cap} and was "
            "stopped; group by fewer or coarser columns, or filter to fewer rows"
        )
        self.limit_bytes = limit_bytes


class PoolClosed(ExecutionError):
    """The pool was closed (server shutdown) before the query could be answered."""

    reason = ErrorReason.SHUTTING_DOWN
    retry_after_seconds = 5.0

    def __init__(self) -> None:
        super().__init__(
            "the server is shutting down; retry on another replica or later",
            {"retry_after_seconds": f"{self.retry_after_seconds:.3f}"},
        )


class WorkerStartError(ExecutionError):
    """A worker process did not signal ready within the start timeout, or exited."""

    reason = ErrorReason.INTERNAL

"""The execution pool's exceptions, documented in one place.

Domain errors raised while a query runs in a worker (`InvalidQuery`, `CostMismatchError`,
`EngineError`, `DatasetNotFoundError`) reach the caller as themselves; these are the pool's
own. The API layer maps them (STYLE.md "Errors, in one place"):

=======================  ===================================================================
PoolOverloaded           every worker is busy and `max_queue` callers already wait;
                         `UNAVAILABLE` / `OVERLOADED` with `retry_after_s`
QueryDeadlineExceeded    no answer within the timeout; the worker was ended, nothing read
                         from it, so nothing may be charged; `DEADLINE_EXCEEDED`
WorkerFailed             the worker crashed, ran past the memory cap, or raised something
                         unexpected (logged on the server, never in the message); `INTERNAL`
PoolClosed               the pool is shutting down; `UNAVAILABLE`
WorkerStartError         `start()` could not get its workers ready (a server start failure)
=======================  ===================================================================
"""

from __future__ import annotations

CRASH_MESSAGE = "the query worker ran out of memory or crashed"


class ExecutionError(Exception):
    """Base of every error the execution pool raises on purpose."""


class PoolOverloaded(ExecutionError):
    """No worker is free and the wait queue is full; refused at once, nothing ran.

    Attributes:
        retry_after_s: a hint, in seconds (at least 1), for when a retry may be served.
    """

    def __init__(self, retry_after_s: float) -> None:
        super().__init__(
            f"every query worker is busy and the queue is full; retry in {retry_after_s:.0f} s"
        )
        self.retry_after_s = retry_after_s


class QueryDeadlineExceeded(ExecutionError):
    """The query had no answer within its timeout (waiting for a worker included).

    The worker running it, if any, was ended (SIGKILL) and replaced, so no answer can
    arrive later: the query must be charged nothing.

    Attributes:
        timeout_s: the timeout that passed.
    """

    def __init__(self, timeout_s: float) -> None:
        super().__init__(f"the query did not finish within {timeout_s:g} s and was cancelled")
        self.timeout_s = timeout_s


class WorkerFailed(ExecutionError):
    """The worker died (out of memory, killed) or failed unexpectedly; no answer.

    The message is safe to show a requester: it never carries a traceback or the
    original exception's text, which are logged on the server instead.
    """

    def __init__(self, message: str = CRASH_MESSAGE) -> None:
        super().__init__(message)
        self.message = message


class PoolClosed(ExecutionError):
    """The pool was closed (server shutdown) before the query could be answered."""

    def __init__(self) -> None:
        super().__init__("the query pool is shutting down")


class WorkerStartError(ExecutionError):
    """A worker process did not signal ready within the start timeout, or exited."""

"""One worker process seen from the parent: launch, wait ready, run a job, kill.

A busy worker is driven by exactly one caller thread (`run`); `is_alive`, `rss_bytes` and
`kill` may be called from any thread (the pool's watchdog), and are made harmless once the
process has been reaped, so a recycled pid is never signalled.
"""

from __future__ import annotations

import contextlib
import enum
import pickle
import threading
import time
from multiprocessing.connection import Connection, wait
from multiprocessing.context import SpawnContext, SpawnProcess
from pathlib import Path
from typing import TYPE_CHECKING

from dpgate_server.execution import worker
from dpgate_server.execution.errors import WorkerStartError
from dpgate_server.execution.messages import STOP, Job, Ready, Reply

if TYPE_CHECKING:
    import psutil

# psutil is imported where it is used, not at module level: a spawned worker imports this
# module too (through the `dpgate_server.execution` package), and only the parent measures
# memory, so the worker's start need not pay for psutil.

_REAP_TIMEOUT_S = 5.0
"""How long to wait for a SIGKILLed process to be reaped (it is near instant)."""


class Ended(enum.Enum):
    """Why `run` returned no reply."""

    TIMED_OUT = "timed out"
    DIED = "died"


class WorkerProcess:
    """A spawned query worker and the parent's end of its pipe."""

    def __init__(self, process: SpawnProcess, conn: Connection) -> None:
        self._process = process
        self._conn = conn
        self._lock = threading.Lock()
        self._disposed = False
        self._pid = process.pid or 0
        self._exitcode: int | None = None
        import psutil  # noqa: PLC0415 (parent only; see the note at the top)

        try:
            self._ps: psutil.Process | None = psutil.Process(self._pid)
        except psutil.Error:  # it already exited: wait_ready will say so
            self._ps = None
        self.over_memory = False
        """Set by the watchdog when it ends this worker for passing the memory cap."""

    @classmethod
    def launch(cls, context: SpawnContext, store_root: Path) -> WorkerProcess:
        """Start a worker process; it is usable after `wait_ready`."""
        parent_end, child_end = context.Pipe(duplex=True)
        process = context.Process(
            target=worker.main,
            args=(child_end, store_root),
            name="dpgate-query-worker",
            daemon=True,  # never outlive the server, even if close() is not reached
        )
        process.start()
        child_end.close()  # so the parent sees EOF when the child dies
        return cls(process, parent_end)

    @property
    def pid(self) -> int:
        return self._pid

    @property
    def exitcode(self) -> int | None:
        """The exit code once disposed of (negative: the signal that ended it)."""
        return self._exitcode

    def wait_ready(self, deadline: float) -> None:
        """Block until the worker says Ready; on timeout or exit, dispose and raise."""
        ready = wait([self._conn, self._process.sentinel], _remaining(deadline))
        if self._conn in ready:
            try:
                message = self._conn.recv()
            except (EOFError, OSError):
                message = None
            if isinstance(message, Ready):
                return
        timed_out = not ready
        self.dispose()
        if timed_out:
            raise WorkerStartError("a query worker did not start within the start timeout")
        raise WorkerStartError(f"a query worker exited while starting (exit code {self.exitcode})")

    def run(self, job: Job, deadline: float) -> Reply | Ended:
        """Send `job` and wait for its reply until `deadline` (time.monotonic)."""
        try:
            self._conn.send(job)
        except OSError:
            return Ended.DIED
        ready = wait([self._conn, self._process.sentinel], _remaining(deadline))
        if self._conn in ready:
            try:
                reply: Reply = self._conn.recv()
            except (EOFError, OSError, pickle.UnpicklingError):
                return Ended.DIED
            return reply
        return Ended.DIED if ready else Ended.TIMED_OUT

    def is_alive(self) -> bool:
        """Whether the process is running (its sentinel is not yet readable)."""
        with self._lock:
            return not self._disposed and not wait([self._process.sentinel], 0)

    def rss_bytes(self) -> int | None:
        """Resident memory of the process, or None if it is gone."""
        import psutil  # noqa: PLC0415 (already imported by __init__; a dictionary lookup)

        with self._lock:
            if self._disposed or self._ps is None:
                return None
            try:
                return int(self._ps.memory_info().rss)
            except psutil.Error:
                return None

    def kill(self) -> None:
        """SIGKILL the process now, without waiting; a no-op once it is disposed."""
        with self._lock:
            if not self._disposed:
                self._process.kill()

    def dispose(self) -> None:
        """Kill (if still running), reap, and close the pipe; idempotent."""
        with self._lock:
            if self._disposed:  # a closed Process refuses join(); nothing left to do
                return
            self._process.kill()
        self._process.join(_REAP_TIMEOUT_S)
        with self._lock:
            if self._disposed:
                return
            self._disposed = True
        self._conn.close()
        self._exitcode = self._process.exitcode
        if self._exitcode is not None:
            self._process.close()

    def stop(self, timeout_s: float) -> None:
        """Ask an idle worker to exit, give it `timeout_s`, then dispose of it."""
        with contextlib.suppress(OSError):  # already gone: dispose() reaps it
            self._conn.send(STOP)
        self._process.join(timeout_s)
        self.dispose()


def _remaining(deadline: float) -> float:
    return max(0.0, deadline - time.monotonic())

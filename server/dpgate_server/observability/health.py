"""gRPC health that reflects what answering needs: worker processes and the ledger.

A server whose workers are all gone, or whose ledger cannot be read, cannot answer a
query; a load balancer should stop sending it calls. A monitor thread runs the checks at an
interval and sets every service's status to SERVING or NOT_SERVING, logging each change
with the reason.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from grpc_health.v1 import health, health_pb2

_log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class CheckResult:
    """One dependency's state: `problem` says what is wrong, None when it is fine."""

    name: str
    problem: str | None = None


Check = Callable[[], CheckResult]


def pool_check(alive_workers: Callable[[], int]) -> Check:
    """Down when no worker process is alive (no query could be answered)."""

    def check() -> CheckResult:
        alive = alive_workers()
        return CheckResult("workers", None if alive > 0 else "no query worker is running")

    return check


def ledger_check(read_head: Callable[[], object]) -> Check:
    """Down when the ledger cannot be read (no spend could be checked or recorded)."""

    def check() -> CheckResult:
        try:
            read_head()
        except Exception as exc:
            return CheckResult("ledger", f"the ledger cannot be read: {type(exc).__name__}")
        return CheckResult("ledger")

    return check


class HealthMonitor:
    """Runs `checks` every `interval_s` and publishes the verdict on the health service."""

    def __init__(
        self,
        servicer: health.HealthServicer,
        service_names: Sequence[str],
        checks: Sequence[Check],
        interval_s: float,
    ) -> None:
        self._servicer = servicer
        self._names = ("", *service_names)
        self._checks = tuple(checks)
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._problems: tuple[str, ...] | None = None
        self._thread = threading.Thread(target=self._run, name="health", daemon=True)

    def start(self) -> None:
        """Check once now (so the first answer is real), then at every interval."""
        self.check_now()
        self._thread.start()

    def check_now(self) -> tuple[str, ...]:
        """Run every check, set the statuses, and return the problems found (empty: fine)."""
        results = [check() for check in self._checks]
        problems = tuple(r.problem for r in results if r.problem is not None)
        status = (
            health_pb2.HealthCheckResponse.NOT_SERVING
            if problems
            else health_pb2.HealthCheckResponse.SERVING
        )
        with self._lock:
            if problems != self._problems:
                if problems:
                    _log.warning("health: NOT_SERVING: %s", "; ".join(problems))
                elif self._problems is not None:
                    _log.info("health: SERVING again")
                self._problems = problems
            for name in self._names:
                self._servicer.set(name, status)
        return problems

    def stop(self) -> None:
        """Stop checking (the server then enters its graceful shutdown)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            try:
                self.check_now()
            except Exception:
                _log.exception("health check failed")

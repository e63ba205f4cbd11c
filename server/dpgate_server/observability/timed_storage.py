"""A `LedgerStorage` wrapper that times every write transaction, for the metrics.

Wrapping the storage (rather than the ledger's operations) measures exactly what an
operator needs to see: how long a writer waits for the lock and commits, whichever
operation wrote.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager

from prometheus_client import Histogram

from dpgate_server.ledger.flights import Flight
from dpgate_server.ledger.storage import LedgerStorage, StorageTransaction


class TimedStorage:
    """Delegates to `inner`; observes each `write()` transaction's duration in `histogram`."""

    def __init__(self, inner: LedgerStorage, histogram: Histogram) -> None:
        self._inner = inner
        self._histogram = histogram

    @contextmanager
    def write(self) -> Iterator[StorageTransaction]:
        started = time.perf_counter()
        try:
            with self._inner.write() as tx:
                yield tx
        finally:
            self._histogram.observe(time.perf_counter() - started)

    def read(self) -> AbstractContextManager[StorageTransaction]:
        return self._inner.read()

    def flight(self, release_key: str, wait_s: float) -> AbstractContextManager[Flight]:
        return self._inner.flight(release_key, wait_s)

    def close(self) -> None:
        self._inner.close()

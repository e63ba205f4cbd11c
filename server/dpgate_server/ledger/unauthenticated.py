"""Unauthenticated requests: counted in memory, chained as one event per source and window.

A request without valid credentials costs one counter increment under a lock: no storage
transaction, no write lock, no fsync. (Each used to take the ledger's write lock and pay a
commit, so a flood of them queued ahead of every debit.) Counts are kept per (source,
window); once a window has closed, its counts are chained, one event per source ("N
unauthenticated request(s) from SOURCE between T1 and T2"), by whichever comes first: the
next ledger write, `Ledger.flush_unauthenticated` (a server runs an `UnauthenticatedFlusher`
that calls it as each window ends, and flushes everything when it stops), or a
transparency export.

Beyond `max_sources` distinct sources in one window, further sources are counted together
under `OTHER_SOURCES`, so the chain grows by at most `max_sources + 1` events per window
however hard it is hammered, and memory holds at most that many counts per open window.

What a crash loses: the counts not yet chained, that is the current window's (and those of
a window that closed in the moment before the flusher chained it). Authenticated requests
are never aggregated: each is one event, written before its answer is sent.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from dpgate_server.ledger._audit import append_event
from dpgate_server.ledger._time import format_time, utc_now
from dpgate_server.ledger.model import Outcome, RequestInfo
from dpgate_server.ledger.storage import (
    LedgerStorage,
    PendingUnauthenticated,
    StorageTransaction,
)

UNAUTHENTICATED_RPC = "(unauthenticated)"
"""The `rpc` of an aggregated unauthenticated-requests event."""

OTHER_SOURCES = "(other sources)"
"""The source under which sources past the per-window limit are counted together."""

UNKNOWN_SOURCE = "(unknown)"
"""The source of a request whose peer address is not known."""

_log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class UnauthenticatedPolicy:
    """How unauthenticated requests are aggregated.

    Attributes:
        window: the length of one counting window (default one minute).
        max_sources: distinct sources counted separately per window.
    """

    window: dt.timedelta = dt.timedelta(minutes=1)
    max_sources: int = 16

    def window_start(self, moment: dt.datetime) -> dt.datetime:
        """The start of the window holding `moment` (windows are aligned to the epoch)."""
        epoch = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
        windows = (moment - epoch) // self.window
        return epoch + windows * self.window


class UnauthenticatedCounter:
    """Thread-safe counts of unauthenticated requests per (window, source), in memory."""

    def __init__(self, policy: UnauthenticatedPolicy) -> None:
        self.policy = policy
        self._lock = threading.Lock()
        self._counts: dict[tuple[dt.datetime, str], PendingUnauthenticated] = {}

    def count(self, request: RequestInfo, at: dt.datetime) -> None:
        """Count one request from `request.source` at `at`."""
        window = self.policy.window_start(at)
        source = request.source or UNKNOWN_SOURCE
        with self._lock:
            if (window, source) not in self._counts and self._full(window):
                source = OTHER_SOURCES
            earlier = self._counts.get((window, source))
            if earlier is None:
                self._counts[(window, source)] = PendingUnauthenticated(
                    source, window, 1, request.rpc, request.request_id, at
                )
            else:
                self._counts[(window, source)] = dataclasses.replace(
                    earlier, count=earlier.count + 1, last_at=max(earlier.last_at, at)
                )

    def pending(self) -> list[PendingUnauthenticated]:
        """Every count not yet chained, oldest window first."""
        with self._lock:
            return [self._counts[key] for key in sorted(self._counts)]

    @contextlib.contextmanager
    def taking(
        self, now: dt.datetime, *, everything: bool = False
    ) -> Iterator[list[PendingUnauthenticated]]:
        """The counts of windows closed at `now` (all counts with `everything`), removed.

        For the block that chains them: if it raises (the transaction rolled back), the
        counts are put back, so none is lost to a failed write.
        """
        current = self.policy.window_start(now)
        with self._lock:
            keys = sorted(k for k in self._counts if everything or k[0] < current)
            taken = [self._counts.pop(key) for key in keys]
        try:
            yield taken
        except BaseException:
            self._put_back(taken)
            raise

    def _full(self, window: dt.datetime) -> bool:
        named = sum(1 for w, s in self._counts if w == window and s != OTHER_SOURCES)
        return named >= self.policy.max_sources

    def _put_back(self, taken: list[PendingUnauthenticated]) -> None:
        with self._lock:
            for pending in taken:
                key = (pending.window_start, pending.source)
                again = self._counts.get(key)  # counted again meanwhile (a clock went back)
                self._counts[key] = (
                    pending
                    if again is None
                    else dataclasses.replace(
                        pending,
                        count=pending.count + again.count,
                        last_at=max(pending.last_at, again.last_at),
                    )
                )


def chain_counts(
    tx: StorageTransaction,
    counts: list[PendingUnauthenticated],
    *,
    at: dt.datetime,
    policy: UnauthenticatedPolicy,
) -> int:
    """Append one event per count, in this transaction; returns how many."""
    for pending in counts:
        end = pending.window_start + policy.window
        append_event(
            tx,
            at=at,
            request=RequestInfo(
                request_id=pending.first_request_id, rpc=UNAUTHENTICATED_RPC, source=pending.source
            ),
            outcome=Outcome.UNAUTHENTICATED,
            detail=(
                f"{pending.count} unauthenticated request(s) from {pending.source} between "
                f"{format_time(pending.window_start)} and {format_time(end)}; "
                f"first RPC {pending.first_rpc}"
            ),
        )
    return len(counts)


@contextlib.contextmanager
def writing(
    storage: LedgerStorage,
    counter: UnauthenticatedCounter,
    clock: Callable[[], dt.datetime],
    *,
    everything: bool = False,
) -> Iterator[tuple[StorageTransaction, dt.datetime]]:
    """A write transaction that first chains the counts of closed windows (every ledger
    writer opens its transaction here, so counts are chained by whichever write comes
    next); a transaction that rolls back puts them back."""
    with counter.taking(clock(), everything=everything) as counts, storage.write() as tx:
        now = clock()
        chain_counts(tx, counts, at=now, policy=counter.policy)
        yield tx, now


def chain_stored_counts(storage: LedgerStorage, clock: Callable[[], dt.datetime]) -> int:
    """Chain and delete the counts an earlier version kept in storage; returns how many.

    Earlier versions counted unauthenticated requests in a table; a ledger opened on such
    a store chains what it finds there (as of opening), so no count is lost to an upgrade.
    """
    with storage.read() as tx:
        if not tx.list_pending_unauthenticated():
            return 0
    with storage.write() as tx:
        stored = tx.list_pending_unauthenticated()
        for pending in stored:
            tx.delete_pending_unauthenticated(pending.source, pending.window_start)
        return chain_counts(tx, stored, at=clock(), policy=UnauthenticatedPolicy())


class UnauthenticatedFlusher:
    """A thread that chains each window's unauthenticated counts as the window ends.

    Without it, a closed window's counts would wait in memory for the next ledger write,
    and a crash meanwhile would lose them; with it, a crash loses at most the current
    window's counts.
    """

    def __init__(
        self,
        flush: Callable[[], int],
        policy: UnauthenticatedPolicy,
        *,
        clock: Callable[[], dt.datetime] = utc_now,
        delay: dt.timedelta = dt.timedelta(milliseconds=500),
    ) -> None:
        self._flush = flush
        self._policy = policy
        self._clock = clock
        self._delay = delay
        self._stopping = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name="unauthenticated-flusher", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread (the caller flushes what remains, e.g. at shutdown)."""
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join()

    def seconds_to_next_flush(self) -> float:
        """From now to just after the current window ends."""
        now = self._clock()
        ends = self._policy.window_start(now) + self._policy.window
        return max(0.0, (ends - now + self._delay).total_seconds())

    def _run(self) -> None:
        while not self._stopping.wait(self.seconds_to_next_flush()):
            try:
                self._flush()
            except Exception:  # the ledger may be down: the counts stay in memory
                _log.warning("could not chain unauthenticated counts; will retry", exc_info=True)

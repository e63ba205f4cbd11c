"""Single flight: one computation of a new question at a time, across every server process.

The debit alone already guarantees that a question is charged once (it looks the release
key up again in its serialised transaction). A flight lock adds that it is also
*computed* once: the first caller takes the lock of its release key, computes, debits and
lets go; callers of the same key on any replica wait for it, then find the release and
are served it free, instead of occupying a worker for an answer that would be thrown
away.

The lock is an optimisation, never a condition of correctness: when it cannot be had in
time (or the locks are all in use), `Flight.held` is False and the caller computes anyway.

- PostgreSQL (`PostgresFlights`): a transaction-level advisory lock keyed by a 64-bit
  hash of the release key, on a connection of a small pool of its own (a waiting caller
  must never take a connection the debit needs). The transaction writes nothing; a
  crashed holder's connection closes and the database releases its lock.
- SQLite (`FileFlights`): the ledger file's processes are on one machine, so a POSIX
  record lock on one byte (offset: a hash of the release key) of `<ledger>.flights`.
  The kernel releases a dead process's locks. POSIX record locks belong to a process, so
  threads of one process first queue on an in-process lock per key, and every storage of
  one ledger file in a process shares one open descriptor (closing any descriptor of the
  file would drop all the process's locks on it).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from dpgate_server.ledger.errors import LedgerBusy

if TYPE_CHECKING:
    import psycopg

    from dpgate_server.ledger.postgres_connections import ConnectionPool

# psycopg is imported by the PostgreSQL methods, not here: every storage imports `Flight`,
# and a server on an SQLite ledger need not load psycopg (about 0.2 CPU s of its start).

_POLL_S = 0.01
"""How often a waiter on the SQLite flight file tries again."""


@dataclass(frozen=True, slots=True)
class Flight:
    """The outcome of asking for a release key's flight lock.

    Attributes:
        held: the lock is held until the block ends (no other caller computes this key).
        waited: another caller held it first (or still holds it, when not `held`): the
            release may exist now, so look it up again before computing.
    """

    held: bool
    waited: bool


def flight_key(release_key: str) -> int:
    """A signed 64-bit number naming `release_key`'s lock (PostgreSQL's bigint)."""
    digest = hashlib.sha256(b"dpgate-flight\0" + release_key.encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class PostgresFlights:
    """Flight locks as advisory transaction locks, on connections of their own pool."""

    def __init__(self, pool: ConnectionPool) -> None:
        self._pool = pool

    @contextmanager
    def hold(self, release_key: str, wait_s: float) -> Iterator[Flight]:
        try:
            self._pool.acquire()
        except LedgerBusy:  # every flight connection is in use: compute without the lock
            yield Flight(held=False, waited=False)
            return
        try:
            with self._locked(flight_key(release_key), wait_s) as flight:
                yield flight
        finally:
            self._pool.release()

    def close(self) -> None:
        self._pool.close()

    @contextmanager
    def _locked(self, key: int, wait_s: float) -> Iterator[Flight]:
        import psycopg  # noqa: PLC0415 (see the note at the top)
        from psycopg import errors as pg_errors  # noqa: PLC0415

        connection, _ = self._pool.take()
        try:
            connection.execute("BEGIN")
            waited = not connection.execute(
                "SELECT pg_try_advisory_xact_lock(%s)", (key,)
            ).fetchone()[0]  # type: ignore[index]
            if waited:
                lock_ms = max(1, round(wait_s * 1000))  # 0 would mean "wait for ever"
                connection.execute(f"SET LOCAL lock_timeout = {lock_ms}")
                connection.execute("SELECT pg_advisory_xact_lock(%s)", (key,))
        except pg_errors.LockNotAvailable:
            _end(connection)
            self._pool.give_back(connection)
            yield Flight(held=False, waited=True)
            return
        except psycopg.Error:  # a lost database: the spend itself will say so
            connection.close()
            self._pool.discard_idle()
            yield Flight(held=False, waited=False)
            return
        try:
            yield Flight(held=True, waited=waited)
        finally:
            _end(connection)  # ROLLBACK: it wrote nothing; the lock goes with it
            self._pool.give_back(connection)


def _end(connection: psycopg.Connection[object]) -> None:
    import psycopg  # noqa: PLC0415 (see the note at the top)

    try:
        connection.execute("ROLLBACK")
    except psycopg.Error:
        connection.close()


class FileFlights:
    """Flight locks as one-byte POSIX record locks on `<ledger>.flights` (one machine)."""

    def __init__(self, ledger_path: Path) -> None:
        self._table = _FlightFile.of(ledger_path.with_name(ledger_path.name + ".flights"))

    @contextmanager
    def hold(self, release_key: str, wait_s: float) -> Iterator[Flight]:
        offset = flight_key(release_key) & (2**62 - 1)
        deadline = time.monotonic() + max(0.0, wait_s)
        with self._table.local_lock(offset) as local:
            waited = not local.acquire(blocking=False)
            if waited and not local.acquire(timeout=max(0.0, wait_s)):
                yield Flight(held=False, waited=True)
                return
            try:
                got, contended = self._table.lock_byte(offset, deadline)
                if not got:
                    yield Flight(held=False, waited=True)
                    return
                try:
                    yield Flight(held=True, waited=waited or contended)
                finally:
                    self._table.unlock_byte(offset)
            finally:
                local.release()

    def close(self) -> None:
        """Nothing to close: the file stays open for the process (see `_FlightFile`)."""


class _FlightFile:
    """One open flight file per path per process, and its in-process locks per key."""

    _open: dict[Path, _FlightFile] = {}  # noqa: RUF012 - the process-wide registry
    _open_lock = threading.Lock()

    def __init__(self, path: Path) -> None:
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self._mutex = threading.Lock()
        self._keys: dict[int, tuple[threading.Lock, int]] = {}

    @classmethod
    def of(cls, path: Path) -> _FlightFile:
        resolved = path.resolve()
        with cls._open_lock:
            found = cls._open.get(resolved)
            if found is None:
                found = cls._open[resolved] = cls(resolved)
            return found

    @contextmanager
    def local_lock(self, offset: int) -> Iterator[threading.Lock]:
        """The in-process lock of `offset`, kept in the table while anyone uses it."""
        with self._mutex:
            lock, users = self._keys.get(offset, (threading.Lock(), 0))
            self._keys[offset] = (lock, users + 1)
        try:
            yield lock
        finally:
            with self._mutex:
                lock, users = self._keys[offset]
                if users == 1:
                    del self._keys[offset]
                else:
                    self._keys[offset] = (lock, users - 1)

    def lock_byte(self, offset: int, deadline: float) -> tuple[bool, bool]:
        """(got it, another process held it first), trying until `deadline`."""
        contended = False
        while True:
            try:
                fcntl.lockf(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, offset)
                return True, contended
            except OSError:
                contended = True
                if time.monotonic() >= deadline:
                    return False, True
                time.sleep(_POLL_S)

    def unlock_byte(self, offset: int) -> None:
        fcntl.lockf(self._fd, fcntl.LOCK_UN, 1, offset)

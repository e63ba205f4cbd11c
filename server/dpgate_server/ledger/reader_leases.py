"""Reader leases in the PostgreSQL ledger: retention on one replica never deletes a
version that a query on another replica (another machine) is reading.

`store/leases.py` defines the interface; its `FileReaderLeases` (flock) serves every
process on one machine, which is all an SQLite ledger can have. With PostgreSQL, replicas
may be on several machines, whose file locks do not see each other, so the lease is a
session-level advisory lock on the version (keyed by a 64-bit hash of dataset and
version), held on one connection per process:

- a process's first reader of a version takes the lock shared, its last reader lets it go
  (in-process readers are counted, so a thousand queries cost one lock);
- retiring takes it exclusively without waiting, and only when no reader of this process
  holds it; while it is held, readers here and elsewhere wait (then find the version gone);
- a crashed process's connection closes and PostgreSQL releases its locks; a lost
  connection is reopened and the counted leases taken again.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
from collections.abc import Iterator

import psycopg

from dpgate_server.ledger.postgres_connections import ConnectionPool

_POLL_S = 0.02
"""How often a reader waiting on a version being retired tries again."""


def lease_key(dataset_id: str, version: str) -> int:
    """A signed 64-bit number naming the lease of one version."""
    digest = hashlib.sha256(f"dpgate-lease\0{dataset_id}\0{version}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class PostgresReaderLeases:
    """`ReaderLeases` as advisory locks in the ledger's database (thread-safe)."""

    def __init__(self, url: str, *, connect_timeout_s: float = 5.0) -> None:
        self._pool = ConnectionPool(
            url, max_connections=1, connect_timeout_s=connect_timeout_s, wait_timeout_s=0.0
        )
        self._mutex = threading.Lock()
        self._changed = threading.Condition(self._mutex)
        self._readers: dict[int, int] = {}
        self._retiring: set[int] = set()
        self._connection: psycopg.Connection[tuple[object, ...]] | None = None

    @contextlib.contextmanager
    def hold(self, dataset_id: str, version: str) -> Iterator[None]:
        key = lease_key(dataset_id, version)
        self._take_shared(key)
        try:
            yield
        finally:
            with self._mutex:
                self._readers[key] -= 1
                if self._readers[key] == 0:
                    del self._readers[key]
                    self._call("SELECT pg_advisory_unlock_shared(%s)", key)
                self._changed.notify_all()

    @contextlib.contextmanager
    def retire(self, dataset_id: str, version: str) -> Iterator[bool]:
        key = lease_key(dataset_id, version)
        with self._mutex:
            free = key not in self._readers and key not in self._retiring
            if free:
                free = bool(self._call("SELECT pg_try_advisory_lock(%s)", key))
            if free:
                self._retiring.add(key)
        if not free:
            yield False
            return
        try:
            yield True
        finally:
            with self._mutex:
                self._retiring.discard(key)
                self._call("SELECT pg_advisory_unlock(%s)", key)
                self._changed.notify_all()

    def close(self) -> None:
        with self._mutex:
            if self._connection is not None:
                self._connection.close()
                self._connection = None
        self._pool.close()

    def _take_shared(self, key: int) -> None:
        with self._mutex:
            while True:
                while key in self._retiring:  # retired here: wait for it to end
                    self._changed.wait()
                if key in self._readers:  # this process holds it already
                    self._readers[key] += 1
                    return
                if self._call("SELECT pg_try_advisory_lock_shared(%s)", key):
                    self._readers[key] = 1
                    return
                self._changed.wait(_POLL_S)  # retired elsewhere: try again shortly

    def _call(self, statement: str, key: int) -> object:
        """Run one lock function on the lease connection (the mutex is held); its value.

        A lost connection is reopened once, and the counted leases taken again on it.
        """
        for attempt in range(2):
            connection = self._connect()
            try:
                row = connection.execute(statement, (key,)).fetchone()
                return None if row is None else row[0]
            except psycopg.Error as error:
                connection.close()
                self._connection = None
                if attempt == 1:
                    raise self._pool.translate(error, "taking a reader lease") from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _connect(self) -> psycopg.Connection[tuple[object, ...]]:
        if self._connection is None or self._connection.closed:
            connection = self._pool.connect()
            try:
                for held in self._readers:  # leases counted before the connection was lost
                    connection.execute("SELECT pg_advisory_lock_shared(%s)", (held,))
            except psycopg.Error as error:
                connection.close()
                raise self._pool.translate(error, "taking reader leases again") from None
            self._connection = connection
        return self._connection

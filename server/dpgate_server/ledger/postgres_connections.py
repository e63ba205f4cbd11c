"""Connections to the PostgreSQL ledger: a small pool, error translation, a redacted URL.

Why our own pool rather than psycopg_pool: the ledger needs only "a healthy connection
for one transaction, at most N at once", and what matters is what happens when the
database goes away. Then every pooled connection is dead; the first failure drops them
all, the transaction fails with `LedgerUnavailable` (nothing was written), and later
transactions connect afresh, so service resumes by itself when the database is back. A
pooled connection found dead at BEGIN (before anything was sent) is replaced once
transparently, so a database restart costs callers at most one failure.

The password is never logged: messages name the database by `redacted_url`, and any text
from libpq is passed through `redact` before it leaves this module.
"""

from __future__ import annotations

import threading
import urllib.parse

import psycopg
from psycopg import errors as pg_errors
from psycopg.rows import TupleRow

from dpgate_server.ledger.errors import LedgerBusy, LedgerUnavailable
from dpgate_server.ledger.postgres_urls import PASSWORD_IN_QUERY, redacted_url


class ConnectionPool:
    """At most `max_connections` connections, idle ones kept for reuse; thread-safe."""

    def __init__(
        self,
        url: str,
        *,
        max_connections: int,
        connect_timeout_s: float,
        wait_timeout_s: float,
    ) -> None:
        self._url = url
        self._secrets = _secrets_of(url)
        self.name = redacted_url(url)
        """The database's URL without its password."""
        self._connect_timeout_s = max(1, round(connect_timeout_s))
        self._wait_timeout_s = wait_timeout_s
        self._slots = threading.BoundedSemaphore(max_connections)
        self._max_connections = max_connections
        self._lock = threading.Lock()
        self._idle: list[psycopg.Connection[TupleRow]] = []
        self._closed = False

    def acquire(self) -> None:
        """Take a connection slot (call before `take`, `release` after giving it back).

        Raises:
            LedgerBusy: every connection stayed in use for the wait timeout.
        """
        if not self._slots.acquire(timeout=self._wait_timeout_s):
            raise LedgerBusy(
                f"all {self._max_connections} ledger connections stayed in use for"
                f" {self._wait_timeout_s:g} s"
            )

    def release(self) -> None:
        """Give a slot back."""
        self._slots.release()

    def take(self) -> tuple[psycopg.Connection[TupleRow], bool]:
        """An idle connection (True: reused) or a new one (False).

        Raises:
            LedgerUnavailable: the database cannot be reached.
        """
        with self._lock:
            if self._closed:
                raise RuntimeError("the ledger storage is closed")
            if self._idle:
                return self._idle.pop(), True
        return self.connect(), False

    def connect(self) -> psycopg.Connection[TupleRow]:
        """A new autocommit connection (transactions are opened explicitly).

        Raises:
            LedgerUnavailable: the database cannot be reached or refuses us.
        """
        try:
            return psycopg.connect(
                self._url,
                autocommit=True,
                connect_timeout=self._connect_timeout_s,
                application_name="dpgate",
            )
        except psycopg.Error as error:
            raise LedgerUnavailable(
                f"cannot connect to the ledger database {self.name}: {self.redact(error)}"
            ) from None

    def give_back(self, connection: psycopg.Connection[TupleRow]) -> None:
        """Return a connection: kept if idle and healthy, else closed."""
        healthy = (
            not connection.closed
            and connection.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        )
        if healthy:
            with self._lock:
                if not self._closed:
                    self._idle.append(connection)
                    return
        connection.close()

    def discard_idle(self) -> None:
        """Close every idle connection (after one was found dead, the rest likely are)."""
        with self._lock:
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()

    def close(self) -> None:
        """Close idle connections and refuse new ones; in-use ones close when given back."""
        with self._lock:
            self._closed = True
        self.discard_idle()

    def redact(self, error: BaseException | str) -> str:
        """One line of `error`'s text with the URL's password (if any) replaced by `***`."""
        text = " ".join(str(error).split())
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def translate(self, error: psycopg.Error, doing: str) -> Exception:
        """The ledger error for a database error raised while `doing` something.

        Lock timeouts, deadlocks and serialisation failures are `LedgerBusy` (retry);
        lost connections and a database shutting down are `LedgerUnavailable`. Anything
        else (a constraint, a bug) is returned unchanged: it must not look retryable.
        """
        if isinstance(error, pg_errors.LockNotAvailable | pg_errors.TransactionRollback):
            return LedgerBusy(f"the ledger stayed locked while {doing}: {self.redact(error)}")
        if isinstance(error, psycopg.OperationalError | psycopg.InterfaceError):
            return LedgerUnavailable(
                f"lost the ledger database {self.name} while {doing}: {self.redact(error)}"
            )
        return error


def _secrets_of(url: str) -> tuple[str, ...]:
    """The password in `url` (raw and percent-decoded), to scrub from messages."""
    try:
        password = urllib.parse.urlsplit(url).password
    except ValueError:
        password = None
    found = {password, urllib.parse.unquote(password)} if password else set()
    match = PASSWORD_IN_QUERY.search(url)
    if match is not None:
        value = url[match.end(1) : match.end()]
        found |= {value, urllib.parse.unquote(value)}
    return tuple(sorted((s for s in found if s), key=len, reverse=True))

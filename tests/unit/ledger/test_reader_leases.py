"""Reader leases in the PostgreSQL ledger: a version is retired only when no server reads it.

Two `PostgresReaderLeases` stand for two replicas (on different machines, their file locks
would not see each other); a raw connection holding the lock stands for a third.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import psycopg
import pytest

from dpgate_server.ledger.reader_leases import PostgresReaderLeases, lease_key
from tests.conftest import PostgresLedgerDatabases


@pytest.fixture
def url(postgres_ledger_databases: PostgresLedgerDatabases) -> Iterator[str]:
    taken = postgres_ledger_databases.take()
    yield taken
    postgres_ledger_databases.give_back(taken)


def test_a_version_read_on_one_replica_is_not_retired_by_another(url: str) -> None:
    one, other = PostgresReaderLeases(url), PostgresReaderLeases(url)
    try:
        with one.hold("d", "v1"), one.hold("d", "v1"):  # two readers, one lock
            with other.retire("d", "v1") as free:
                assert not free
            with one.retire("d", "v1") as free:
                assert not free  # its own reader too
            with other.retire("d", "v2") as free:
                assert free  # other versions are not held
        with other.retire("d", "v1") as free:
            assert free
    finally:
        one.close()
        other.close()


def test_a_reader_waits_while_a_version_is_being_retired(url: str) -> None:
    one, other = PostgresReaderLeases(url), PostgresReaderLeases(url)
    leased = threading.Event()

    def read() -> None:
        with one.hold("d", "v1"):
            leased.set()

    try:
        with other.retire("d", "v1") as free:
            assert free
            reader = threading.Thread(target=read)
            reader.start()
            assert not leased.wait(0.3)  # no lease while the version is being deleted
        assert leased.wait(10)  # then granted (the caller finds the version gone)
        reader.join(10)
    finally:
        one.close()
        other.close()


def test_a_lost_process_lets_go_and_a_lost_connection_takes_its_leases_again(url: str) -> None:
    leases, watcher = PostgresReaderLeases(url), PostgresReaderLeases(url)
    try:
        with psycopg.connect(url, autocommit=True) as crashed:  # a replica that will die
            crashed.execute("SELECT pg_advisory_lock_shared(%s)", (lease_key("d", "v1"),))
            crashed_pid = crashed.info.backend_pid
            with watcher.retire("d", "v1") as free:
                assert not free
        # The server ends the closed connection's backend (and its locks) a moment later.
        _wait_until_gone(url, crashed_pid)
        with watcher.retire("d", "v1") as free:  # its connection closed: lock released
            assert free

        with leases.hold("d", "v1"):
            with psycopg.connect(url, autocommit=True) as admin:  # the connection is lost
                admin.execute(
                    "SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity"
                    " WHERE application_name = 'dpgate' AND pid <> pg_backend_pid()"
                    " AND pid IN (SELECT pid FROM pg_locks WHERE locktype = 'advisory')"
                )
            # The next lease reconnects, and takes v1 again.
            with leases.hold("d", "v2"), watcher.retire("d", "v1") as free:
                assert not free
    finally:
        leases.close()
        watcher.close()


def _wait_until_gone(url: str, pid: int, timeout_s: float = 10.0) -> None:
    """Wait for a backend process to end: closing a connection does not wait for it."""
    deadline = time.monotonic() + timeout_s
    with psycopg.connect(url, autocommit=True) as admin:
        while admin.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone():
            assert time.monotonic() < deadline, f"backend {pid} still running after {timeout_s} s"
            time.sleep(0.02)

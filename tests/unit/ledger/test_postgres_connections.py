"""The PostgreSQL storage's connections: lost ones are replaced, errors never show the password."""

from __future__ import annotations

import datetime as dt

import psycopg
import pytest

from dpgate_server.ledger import Ledger, LedgerUnavailable, PostgresStorage, Requester, RequestInfo
from dpgate_server.ledger.postgres_connections import ConnectionPool
from dpgate_server.ledger.postgres_urls import is_postgres_url, redacted_url

REQUESTER = Requester("r", "R", "O", "A", True, dt.datetime(2025, 1, 6, tzinfo=dt.UTC))


@pytest.fixture
def url(postgres_ledger_databases):
    taken = postgres_ledger_databases.take()
    yield taken
    postgres_ledger_databases.give_back(taken)


def _end_ledger_sessions(url: str) -> int:
    """What a database restart does to the ledger's pooled connections."""
    database = url.rsplit("/", 1)[1]
    with psycopg.connect(url, autocommit=True) as admin:
        rows = admin.execute(
            "SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity"
            " WHERE datname = %s AND application_name = 'dpgate'",
            (database,),
        ).fetchall()
    return len(rows)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://u:p%40ss@h:5432/d", "postgresql://u:***@h:5432/d"),
        ("postgresql://u@h/d", "postgresql://u@h/d"),
        ("postgres://h/d?user=u&password=pw&sslmode=require", "postgres://h/d?user=u&password=***&sslmode=require"),
    ],
)  # fmt: skip
def test_urls_are_shown_without_their_password(url, shown):
    assert redacted_url(url) == shown
    assert is_postgres_url(url)


def test_the_password_is_scrubbed_from_any_error_text():
    pool = ConnectionPool(
        "postgresql://u:s3cr%2Ft@h/d", max_connections=1, connect_timeout_s=1, wait_timeout_s=1
    )
    assert pool.redact("FATAL: bad s3cr/t and s3cr%2Ft\n  again") == "FATAL: bad *** and *** again"


def test_pooled_connections_lost_in_a_restart_are_replaced_without_failing_a_call(url):
    with Ledger.open_postgres(url, max_connections=4) as ledger:
        before = ledger.head()
        assert _end_ledger_sessions(url) >= 1
        assert ledger.head() == before  # the dead pooled connection is replaced at BEGIN
        assert _end_ledger_sessions(url) >= 1
        ledger.admin.create_requester(
            "r", name="R", organisation="O", agreement="A", request=RequestInfo("op", "Setup")
        )
        assert ledger.verify().ok


def _write_across_a_restart(storage: PostgresStorage, url: str) -> None:
    with storage.write() as tx:
        tx.insert_requester(REQUESTER)
        _end_ledger_sessions(url)
        tx.get_head()


def test_a_connection_lost_mid_transaction_is_ledger_unavailable_and_writes_nothing(url):
    storage = PostgresStorage(url)
    try:
        with pytest.raises(LedgerUnavailable, match="lost the ledger database"):
            _write_across_a_restart(storage, url)
        with storage.read() as tx:  # the next transaction connects afresh
            assert tx.get_requester(REQUESTER.requester_id) is None
    finally:
        storage.close()


def test_an_unreachable_database_is_ledger_unavailable_naming_it_without_password(url):
    closed = url.replace(url.split("@")[1].split("/")[0], "127.0.0.1:1")
    with pytest.raises(LedgerUnavailable) as refused:
        PostgresStorage(closed, connect_timeout_s=1)
    assert "cannot connect to the ledger database postgresql://postgres:***@127.0.0.1:1/" in str(
        refused.value
    )
    password = url.split(":")[2].split("@")[0]
    assert password not in str(refused.value)

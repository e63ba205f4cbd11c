"""The SQLite storage: durable settings, versioned migrations, reopening."""

from __future__ import annotations

import sqlite3

import pytest

from dpgate_server.ledger import Ledger, LedgerBusy, LedgerSchemaError, Outcome, SqliteStorage
from dpgate_server.ledger.sqlite_schema import MIGRATIONS


def test_new_ledger_records_its_schema_version(tmp_path):
    storage = SqliteStorage(tmp_path / "l.db")
    assert storage.schema_version() == MIGRATIONS[-1][0]
    storage.close()


def test_ledger_file_is_in_wal_mode(tmp_path):
    SqliteStorage(tmp_path / "l.db").close()
    with sqlite3.connect(tmp_path / "l.db") as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_reopening_keeps_the_data_and_applies_nothing_twice(setup):
    setup.charge(setup.alice, "k1", 5)
    setup.ledger.close()
    with Ledger.open_sqlite(setup.path) as reopened:
        assert reopened.get_budget("alice", setup.dataset).spent_units == 5
        assert reopened.verify().ok
    with sqlite3.connect(setup.path) as db:
        assert db.execute("SELECT count(*) FROM schema_version").fetchone()[0] == len(MIGRATIONS)


def test_ledger_from_a_newer_dpgate_is_refused(tmp_path):
    SqliteStorage(tmp_path / "l.db").close()
    with sqlite3.connect(tmp_path / "l.db") as db:
        db.execute("INSERT INTO schema_version VALUES (999, 'future', 'x')")
    with pytest.raises(LedgerSchemaError):
        SqliteStorage(tmp_path / "l.db")


def test_database_constraints_refuse_an_overspend_even_without_the_logic(setup):
    with sqlite3.connect(setup.path) as db, pytest.raises(sqlite3.IntegrityError):
        db.execute("UPDATE allocations SET spent_units = granted_units + 1")


def test_closed_storage_refuses_use(tmp_path):
    storage = SqliteStorage(tmp_path / "l.db")
    storage.close()
    with pytest.raises(RuntimeError), storage.read():
        pass


def test_write_lock_held_past_the_busy_timeout_raises_ledger_busy(setup):
    setup.ledger.close()
    blocker = sqlite3.connect(setup.path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        with (
            Ledger.open_sqlite(setup.path, busy_timeout_s=0.05) as ledger,
            pytest.raises(LedgerBusy),
        ):
            ledger.record_event(setup.request(setup.alice), Outcome.INVALID)
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()

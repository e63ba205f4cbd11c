"""The storages: durable settings, versioned migrations, reopening (SQLite and PostgreSQL)."""

from __future__ import annotations

import sqlite3

import pytest

from dpgate_server.ledger import (
    LedgerBusy,
    LedgerSchemaError,
    Outcome,
    RequestInfo,
    SqliteStorage,
    postgres,
    postgres_schema,
    sqlite,
    sqlite_schema,
)

LATEST = sqlite_schema.MIGRATIONS[-1][0]
STORAGE_MODULES = {"sqlite": sqlite, "postgresql": postgres}


def _versions(store):
    return [row[0] for row in store.fetch("SELECT version FROM schema_version ORDER BY 1")]


def test_both_backends_have_the_same_migrations():
    def outline(migrations):
        return [(version, description) for version, description, _ in migrations]

    assert outline(sqlite_schema.MIGRATIONS) == outline(postgres_schema.MIGRATIONS)
    assert [v for v, _, _ in sqlite_schema.MIGRATIONS] == list(range(1, LATEST + 1))


def test_new_ledger_records_its_schema_version(ledger_store):
    ledger_store.open().close()
    assert _versions(ledger_store) == list(range(1, LATEST + 1))


def test_ledger_file_is_in_wal_mode(tmp_path):
    SqliteStorage(tmp_path / "l.db").close()
    with sqlite3.connect(tmp_path / "l.db") as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_reopening_keeps_the_data_and_applies_nothing_twice(setup):
    setup.charge(setup.alice, "k1", 5)
    setup.ledger.close()
    with setup.store.open() as reopened:
        assert reopened.get_budget("alice", setup.dataset).spent_units == 5
        assert reopened.verify().ok
    assert _versions(setup.store) == list(range(1, LATEST + 1))


def test_ledger_from_a_newer_dpgate_is_refused(ledger_store):
    ledger_store.open().close()
    ledger_store.execute(
        "INSERT INTO schema_version (version, description, applied_at) VALUES (?, ?, ?)",
        LATEST + 1,
        "from the future",
        "2030-01-01T00:00:00.000000Z",
    )
    with pytest.raises(LedgerSchemaError, match="a newer dpgate has migrated it") as refused:
        ledger_store.open()
    assert f"schema version {LATEST + 1}" in str(refused.value)
    assert f"knows versions up to {LATEST}" in str(refused.value)


def test_newer_code_migrates_a_ledger_with_data_once_and_older_code_then_refuses(
    setup, monkeypatch
):
    setup.charge(setup.alice, "k1", 5)
    head = setup.ledger.head()
    setup.ledger.close()
    module = STORAGE_MODULES[setup.store.backend]
    extra = (
        LATEST + 1,
        "test: one more table",
        (
            "CREATE TABLE migration_marker (note TEXT NOT NULL)",
            "INSERT INTO migration_marker (note) VALUES ('migrated')",
        ),
    )
    monkeypatch.setattr(module, "MIGRATIONS", (*module.MIGRATIONS, extra))
    for _ in range(2):  # the second open applies nothing
        with setup.store.open(clock=setup.clock) as ledger:
            assert ledger.get_budget("alice", setup.dataset).spent_units == 5
            assert ledger.authenticate(setup.alice_token) == setup.alice
            assert ledger.head() == head
            assert ledger.verify().ok
            assert ledger.reconcile().ok
    assert setup.store.fetch("SELECT note FROM migration_marker") == [("migrated",)]
    assert _versions(setup.store) == list(range(1, LATEST + 2))

    monkeypatch.undo()  # the older dpgate
    with pytest.raises(LedgerSchemaError, match="a newer dpgate has migrated it"):
        setup.store.open()


def test_a_failing_migration_leaves_the_ledger_as_it_was(setup, monkeypatch):
    setup.charge(setup.alice, "k1", 5)
    setup.ledger.close()
    module = STORAGE_MODULES[setup.store.backend]
    broken = (
        LATEST + 1,
        "test: fails half-way",
        ("CREATE TABLE half_done (x INTEGER)", "ALTER TABLE no_such_table ADD COLUMN y TEXT"),
    )
    monkeypatch.setattr(module, "MIGRATIONS", (*module.MIGRATIONS, broken))
    with pytest.raises(LedgerSchemaError, match="no_such_table"):
        setup.store.open()
    monkeypatch.undo()
    assert _versions(setup.store) == list(range(1, LATEST + 1))
    with setup.store.open() as ledger:
        assert ledger.get_budget("alice", setup.dataset).spent_units == 5
    with pytest.raises(setup.store.database_error):  # the half-made table is gone
        setup.store.fetch("SELECT * FROM half_done")


def test_database_constraints_refuse_an_overspend_even_without_the_logic(setup):
    with pytest.raises(setup.store.integrity_error):
        setup.store.execute("UPDATE allocations SET spent_units = granted_units + 1")
    with pytest.raises(setup.store.integrity_error):
        setup.store.execute("UPDATE datasets SET spent_units = cap_units + 1")


def test_closed_storage_refuses_use(ledger_store):
    ledger = ledger_store.open()
    ledger.close()
    with pytest.raises(RuntimeError, match="closed"):
        ledger.head()


def test_write_lock_held_past_the_busy_timeout_raises_ledger_busy(setup):
    setup.ledger.close()
    with (
        setup.store.write_lock_held(),
        setup.store.open(busy_timeout_s=0.05) as ledger,
        pytest.raises(LedgerBusy),
    ):
        ledger.record_event(setup.request(setup.alice), Outcome.INVALID)
    with setup.store.open() as ledger:  # nothing was written, and writing works again
        before = ledger.head().count
        ledger.record_event(setup.request(setup.alice), Outcome.INVALID)
        assert ledger.head().count == before + 1
        assert ledger.verify().ok


def test_a_ledger_at_schema_1_with_data_is_migrated_to_the_latest(ledger_store, monkeypatch):
    """Every released schema must migrate forward: build version 1, fill it, open it now."""
    module = STORAGE_MODULES[ledger_store.backend]
    if ledger_store.backend == "postgresql":  # the test databases come migrated: start blank
        ledger_store.execute("DROP SCHEMA public CASCADE")
        ledger_store.execute("CREATE SCHEMA public")
    monkeypatch.setattr(module, "MIGRATIONS", module.MIGRATIONS[:1])
    ledger_store.open().close()  # an empty ledger at schema 1, as the first release made it
    monkeypatch.undo()
    at = "2025-01-06T09:00:00.000000Z"
    for statement, values in (
        ("INSERT INTO requesters VALUES (?, ?, ?, ?, ?, ?)", ("r1", "R", "Org", "DSA-1", True, at)),
        ("INSERT INTO datasets VALUES (?, ?, ?, ?, ?)", ("d", "pure_dp", 1_000, 5, True)),
        ("INSERT INTO allocations VALUES (?, ?, ?, ?, ?)", ("r1", "d", 100, 5, None)),
    ):
        ledger_store.execute(statement, *values)
    ledger_store.execute(
        "INSERT INTO releases (release_id, release_key, dataset_id, requester_id, cost_units,"
        " payload, created_at, request_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        "rel_1", "key-1", "d", "r1", 5, b"answer", at, "req-1",
    )  # fmt: skip
    assert _versions(ledger_store) == [1]

    with ledger_store.open() as ledger:
        assert _versions(ledger_store) == list(range(1, LATEST + 1))
        (line,) = ledger.admin.spending_report().lines
        assert (line.requester_id, line.spent_units, line.releases) == ("r1", 5, 1)
        assert (line.purpose, line.agreement) == ("not recorded", "not recorded")
        assert ledger.get_budget("r1", "d").remaining_units == 95
        assert ledger.lookup_release("key-1", "r1").payload == b"answer"
        assert ledger.lookup_release("key-1", "r1").dataset_version is None  # not known then
        assert ledger.reconcile().ok
        ledger.debit(
            "r1", "d", "key-2", idempotency_key=None, cost_units=10, payload=b"more",
            request=RequestInfo("req-2", "RunQuery"), dataset_version="v000002",
        )  # fmt: skip
        assert ledger.get_budget("r1", "d").spent_units == 15
        assert ledger.verify().ok
        found = ledger.derivation_sources("r1", "d", "v000002")
        assert [(r.release_key, r.dataset_version) for r in found] == [
            ("key-1", None),
            ("key-2", "v000002"),
        ]


def test_releases_are_looked_up_by_version_and_keys_by_release_through_indexes(ledger_store):
    """Migration 7: derivation sources by (dataset, version); received releases by key."""
    ledger_store.open().close()
    if ledger_store.backend == "sqlite":
        found = ledger_store.fetch("SELECT name FROM sqlite_master WHERE type = 'index'")
    else:
        found = ledger_store.fetch("SELECT indexname FROM pg_indexes")
    names = {name for (name,) in found}
    assert {"releases_by_version", "idempotency_keys_by_release"} <= names
    if ledger_store.backend == "sqlite":  # the planner's choice is stable on SQLite
        plan = ledger_store.fetch(
            "EXPLAIN QUERY PLAN " + sqlite.RELEASES_ON_VERSION,
            None, "d", "v1",
        )  # fmt: skip
        searches = [str(row[-1]) for row in plan if "releases" in str(row[-1])]
        assert len(searches) == 2
        assert all("USING INDEX releases_by_version" in s for s in searches), searches

"""Fixtures shared by every test package."""

from __future__ import annotations

import contextlib
import itertools
import sqlite3
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from dpgate_server.ledger import Ledger, PostgresStorage
from dpgate_server.ledger.chain import GENESIS_HASH
from dpgate_server.ledger.local_postgres import LocalPostgres
from dpgate_server.queries import process_settings
from dpgate_server.store.store import DatasetVersion
from dpgate_server.synthetic.generator import ensure_demo_dataset
from tests import parallel
from tests.adversarial import figures

SMALL_DATASET_PRACTICES = 10
SMALL_DATASET_SEED = 7


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if hasattr(config, "workerinput"):  # a pytest-xdist worker: see tests/parallel.py
        parallel.slow_modules_first(items)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> object:
    return parallel.make_scheduler(config, log)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    """A pytest-xdist worker finished: add its adversarial figures to the run's."""
    sent = getattr(node, "workeroutput", {}).get(figures.FIGURES_OUTPUT)
    if sent is not None:
        figures.figures_of(node.config).merge_json(sent)


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    figures.report(config, terminalreporter)


@pytest.fixture(scope="session", autouse=True)
def engine_process_settings() -> None:
    """Set the engine's process-wide switches once, as a query worker does at start.

    Tests run the engine in this process too (and the workers they spawn inherit the
    environment, so a test of a worker's own settings removes them before it starts one).
    """
    process_settings.configure_process()


@pytest.fixture(scope="session")
def small_dataset_paths(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(store root, key file) of the session's small synthetic dataset; the key is outside."""
    base = tmp_path_factory.mktemp("small_dataset")
    return base / "store", base / "secrets" / "pseudonym.key"


@pytest.fixture(scope="session")
def small_dataset(small_dataset_paths: tuple[Path, Path]) -> DatasetVersion:
    """A published "gp_appointments" version: 10 whole practices (~570k rows), seed 7.

    Generated once per session (~3 s). Treat it as read-only: publish other versions into
    your own store (tmp_path), never into this one.
    """
    store_root, key_file = small_dataset_paths
    return ensure_demo_dataset(
        store_root, key_file, practices=SMALL_DATASET_PRACTICES, seed=SMALL_DATASET_SEED
    )


# The ledger's backends. Ledger tests take `ledger_store` (or `ledger_store_factory`),
# parametrized over SQLite and PostgreSQL, so every ledger test runs against both. The
# PostgreSQL cluster is a throwaway one started from the machine's binaries, once per
# session and only when a PostgreSQL-backed test runs; each test gets its own empty
# database (see PostgresLedgerDatabases).

LEDGER_BACKENDS = ("sqlite", "postgresql")
_TEMPLATE = "ledger_template"


@dataclass(frozen=True)
class LedgerStore:
    """One fresh ledger store: where it is, and raw access for tests that tamper with it.

    `location` is what `Ledger.open` takes (a file path or a postgresql:// URL); SQL given
    to `execute` and `fetch` uses `?` placeholders on both backends.
    """

    backend: str
    location: str
    _done: Callable[[], None] = lambda: None

    def done(self) -> None:
        """Hand the store back (its ledgers closed); it must not be used afterwards."""
        self._done()

    def open(self, **options: Any) -> Ledger:
        """Open the ledger (migrating it on first open)."""
        return Ledger.open(self.location, **options)

    def execute(self, statement: str, *parameters: object) -> None:
        """Run one statement outside the ledger, committed at once (to tamper, or to block)."""
        self.fetch(statement, *parameters, rows=False)

    def fetch(
        self, statement: str, *parameters: object, rows: bool = True
    ) -> list[tuple[Any, ...]]:
        """Rows of one statement run outside the ledger."""
        if self.backend == "sqlite":
            with contextlib.closing(sqlite3.connect(self.location)) as db, db:
                cursor = db.execute(statement, parameters)
                return cursor.fetchall() if rows else []
        with psycopg.connect(self.location, autocommit=True) as db:
            cursor = db.execute(statement.replace("?", "%s"), parameters)  # type: ignore[arg-type]
            return cursor.fetchall() if rows else []

    @property
    def integrity_error(self) -> type[Exception]:
        """What the database raises when a constraint refuses a change."""
        return sqlite3.IntegrityError if self.backend == "sqlite" else psycopg.IntegrityError

    @property
    def database_error(self) -> type[Exception]:
        """The base of every error the database raises."""
        return sqlite3.Error if self.backend == "sqlite" else psycopg.Error

    def everything_stored(self) -> bytes:
        """Every byte the store keeps (SQLite: its files; PostgreSQL: every row as text)."""
        if self.backend == "sqlite":
            path = Path(self.location)
            return b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))
        tables = self.fetch(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
        )
        parts = [
            str(row[0]).encode()
            for (table,) in tables
            for row in self.fetch(f"SELECT t::text FROM {table} t")
        ]
        return b"\n".join(parts)

    @contextlib.contextmanager
    def write_lock_held(self) -> Iterator[None]:
        """Hold the lock every ledger writer needs, from another connection."""
        if self.backend == "sqlite":
            blocker = sqlite3.connect(self.location, isolation_level=None)
            blocker.execute("BEGIN IMMEDIATE")
            try:
                yield
            finally:
                blocker.execute("ROLLBACK")
                blocker.close()
            return
        with psycopg.connect(self.location) as db:  # a transaction until the block ends
            db.execute("SELECT 1 FROM audit_head FOR UPDATE")
            yield
            db.rollback()


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[LocalPostgres]:
    """A throwaway PostgreSQL cluster for the session (see dpgate_server.ledger.local_postgres)."""
    cluster = LocalPostgres.start()
    try:
        yield cluster
    finally:
        cluster.destroy()


class PostgresLedgerDatabases:
    """Empty, migrated ledger databases, one per test, reused once a test is done with one.

    A new one is copied from a migrated template (CREATE DATABASE ... TEMPLATE: ~150 ms and
    7 MB on disk); a returned one is emptied instead (a few ms), after ending any session
    a test left connected. One whose schema a test changed (migration tests) is dropped.
    """

    def __init__(self, cluster: LocalPostgres) -> None:
        self._cluster = cluster
        self._free: list[str] = []
        self._admin = psycopg.connect(cluster.url(), autocommit=True)
        template = cluster.create_database(_TEMPLATE)
        PostgresStorage(template).close()
        with psycopg.connect(template, autocommit=True) as db:
            self._shape = self._shape_of(db)

    def take(self) -> str:
        """The URL of an empty database that no one else uses until it is given back."""
        if self._free:
            return self._cluster.url(self._free.pop())
        return self._cluster.create_database(f"ledger_{uuid.uuid4().hex[:12]}", _TEMPLATE)

    def give_back(self, url: str) -> None:
        """Empty the database for the next test, or drop it if its schema changed."""
        name = url.rsplit("/", 1)[1]
        self._admin.execute(
            "SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity"
            " WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        )
        with psycopg.connect(url, autocommit=True) as db:
            reusable = self._shape_of(db) == self._shape
            if reusable:
                self._empty(db)
        if reusable:
            self._free.append(name)
        else:
            drop = sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name))
            self._admin.execute(drop)

    def close(self) -> None:
        self._admin.close()

    def _empty(self, db: psycopg.Connection[Any]) -> None:
        with db.transaction():
            db.execute("SET LOCAL session_replication_role = replica")  # no foreign-key order
            for table in self._shape[0]:
                if table not in ("schema_version", "audit_head"):
                    db.execute(sql.SQL("DELETE FROM {}").format(sql.Identifier(table)))
            db.execute("UPDATE audit_head SET event_count = 0, head_hash = %s", (GENESIS_HASH,))

    @staticmethod
    def _shape_of(db: psycopg.Connection[Any]) -> tuple[tuple[str, ...], tuple[int, ...]]:
        """(tables, applied migrations) of a database."""
        tables = db.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1"
        ).fetchall()
        versions = db.execute("SELECT version FROM schema_version ORDER BY 1").fetchall()
        return tuple(t for (t,) in tables), tuple(v for (v,) in versions)


@pytest.fixture(scope="session")
def postgres_ledger_databases(
    postgres_cluster: LocalPostgres,
) -> Iterator[PostgresLedgerDatabases]:
    """Where PostgreSQL-backed ledger tests get their (empty, migrated) databases."""
    databases = PostgresLedgerDatabases(postgres_cluster)
    yield databases
    databases.close()


@pytest.fixture(params=LEDGER_BACKENDS)
def ledger_store_factory(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Callable[[], LedgerStore]]:
    """Makes fresh, empty ledger stores of the parametrized backend (SQLite, PostgreSQL).

    A store's `done()` hands it back early (a property test makes one per example);
    the rest are handed back when the test ends.
    """
    backend: str = request.param
    if backend == "sqlite":
        made = itertools.count()
        yield lambda: LedgerStore(backend, str(tmp_path / f"ledger-{next(made)}.db"))
        return
    databases: PostgresLedgerDatabases = request.getfixturevalue("postgres_ledger_databases")
    lent: set[str] = set()

    def give_back(url: str) -> None:
        if url in lent:
            lent.remove(url)
            databases.give_back(url)

    def make() -> LedgerStore:
        url = databases.take()
        lent.add(url)
        return LedgerStore(backend, url, lambda: give_back(url))

    yield make
    for url in list(lent):
        give_back(url)


@pytest.fixture
def ledger_store(ledger_store_factory: Callable[[], LedgerStore]) -> LedgerStore:
    """One fresh ledger store of the parametrized backend (SQLite, then PostgreSQL)."""
    return ledger_store_factory()

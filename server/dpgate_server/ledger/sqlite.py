"""The SQLite ledger storage: one file, WAL, group commit, serial writers.

Why these settings:
- WAL lets readers (release lookups, budget reads, exports) run while a debit commits.
- Group commit: a write returns only after an fsync of the WAL that covers its commit, so a
  debit (and every audit event) that returned has survived power loss, not only a process
  crash; but writers that commit while an fsync is under way share the next one instead
  of each waiting for its own (`_GroupSync`). SQLite itself runs with `synchronous=NORMAL`
  (no fsync at commit; the WAL is still synced before every checkpoint), and the fsync it
  would do at commit under FULL is done once for all the commits waiting. The write lock
  is released before that fsync, so the next writers commit while it runs.
- `BEGIN IMMEDIATE` takes the write lock before the first read, so the debit's checks and
  writes see no concurrent change, in this process or any other opening the same file.
- `busy_timeout` makes a writer wait for the lock rather than fail; past it, `LedgerBusy`.
- Writers within one process queue on a Python lock before `BEGIN IMMEDIATE` (see `write`).

Connections are pooled: each is used by one thread at a time and returned afterwards.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

from dpgate_server.ledger._time import (
    format_optional,
    format_time,
    parse_optional,
    parse_time,
    utc_now,
)
from dpgate_server.ledger.errors import AlreadyExists, LedgerBusy, LedgerSchemaError
from dpgate_server.ledger.flights import FileFlights, Flight
from dpgate_server.ledger.model import (
    Allocation,
    AuditEvent,
    CapChange,
    ChainHead,
    Dataset,
    DerivedRecord,
    Outcome,
    PublishSpend,
    Requester,
    Role,
    StoredRelease,
    TokenInfo,
)
from dpgate_server.ledger.sqlite_schema import MIGRATIONS
from dpgate_server.ledger.storage import (
    IDEMPOTENCY_COLUMNS,
    IdempotencyRecord,
    PendingUnauthenticated,
    ReleaseTotal,
    idempotency_record,
)
from dpgate_server.vocabulary.accounting import Accounting

DEFAULT_BUSY_TIMEOUT_S = 30.0
"""How long a writer waits for the lock before `LedgerBusy` (debits take about a millisecond)."""


RELEASES_ON_VERSION = (
    "SELECT *, rowid AS seq FROM releases WHERE dataset_id = ?2 AND dataset_version = ?3"
    " AND (?1 IS NULL OR requester_id = ?1)"
    " UNION ALL SELECT *, rowid AS seq FROM releases WHERE dataset_id = ?2"
    " AND dataset_version IS NULL AND (?1 IS NULL OR requester_id = ?1) ORDER BY seq"
)
"""A dataset's releases on one version (?3), and those recorded without a version, of one
requester (?1) or all (?1 NULL), oldest first. Two arms, not an OR: SQLite then searches
releases_by_version on (dataset_id, dataset_version) in each, not every release of the
dataset."""


class SqliteStorage:
    """`LedgerStorage` over one SQLite file; safe to share between threads and processes."""

    def __init__(
        self,
        path: Path | str,
        *,
        busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S,
        max_idle_connections: int = 8,
        fsync: Callable[[int], None] = os.fsync,
    ) -> None:
        """Open (creating if needed) the ledger at `path` and apply pending migrations.

        `fsync` makes a file descriptor's data durable (tests record when it is called).

        Raises:
            LedgerSchemaError: the file was written by a newer version of dpgate.
        """
        self._path = Path(path)
        self._busy_timeout_s = busy_timeout_s
        self._max_idle = max_idle_connections
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._idle: list[sqlite3.Connection] = []
        self._closed = False
        self._sync = _GroupSync(self._path, fsync)
        connection = self._connect()
        try:
            connection.execute("PRAGMA journal_mode=WAL")
            _migrate(connection)
        except BaseException:
            connection.close()
            raise
        self._give_back(connection)
        self._flights = FileFlights(self._path)
        self._sync.wait_durable(self._sync.committed())

    @property
    def path(self) -> Path:
        """The ledger file."""
        return self._path

    def schema_version(self) -> int:
        """The highest migration applied to the file."""
        with self._connection() as connection:
            row = connection.execute("SELECT max(version) FROM schema_version").fetchone()
            return int(row[0])

    @contextmanager
    def write(self) -> Iterator[SqliteTransaction]:
        """A `BEGIN IMMEDIATE` transaction: commits on success, rolls back on error.

        Writers of this process first queue on a lock: SQLite has one write lock anyway,
        and its busy handler retries by sleeping up to 100 ms at a time, which under
        contention wastes most of the time. Across processes the busy handler arbitrates.
        """
        if not self._write_lock.acquire(timeout=self._busy_timeout_s):
            raise LedgerBusy("the ledger stayed locked by other writers of this process")
        try:
            with self._connection() as connection:
                _begin(connection, "BEGIN IMMEDIATE")
                yield from _run(connection)
                ticket = self._sync.committed()
        finally:
            self._write_lock.release()
        self._sync.wait_durable(ticket)  # before the caller goes on: nothing is acknowledged

    @contextmanager
    def read(self) -> Iterator[SqliteTransaction]:
        """A deferred transaction used only for reads: one consistent WAL snapshot."""
        with self._connection() as connection:
            _begin(connection, "BEGIN")
            yield from _run(connection)

    def flight(self, release_key: str, wait_s: float) -> AbstractContextManager[Flight]:
        """A lock on one byte of `<ledger>.flights` (see `ledger/flights.py`)."""
        return self._flights.hold(release_key, wait_s)

    def close(self) -> None:
        """Close idle connections; connections in use close when given back."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()

    @contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            if self._closed:
                raise RuntimeError("the ledger storage is closed")
            connection = self._idle.pop() if self._idle else None
        if connection is None:
            connection = self._connect()
        try:
            yield connection
        finally:
            self._give_back(connection)

    def _give_back(self, connection: sqlite3.Connection) -> None:
        try:
            unusable = connection.in_transaction
        except sqlite3.ProgrammingError:  # closed after a failed rollback
            return
        if unusable:
            connection.close()
            return
        with self._lock:
            if not self._closed and len(self._idle) < self._max_idle:
                self._idle.append(connection)
                return
        connection.close()

    def _connect(self) -> sqlite3.Connection:
        connection = sqlite3.connect(
            self._path,
            timeout=self._busy_timeout_s,
            isolation_level=None,
            check_same_thread=False,
        )
        connection.execute(f"PRAGMA busy_timeout={int(self._busy_timeout_s * 1000)}")
        connection.execute("PRAGMA synchronous=NORMAL")  # commits are synced by _GroupSync
        connection.execute("PRAGMA foreign_keys=ON")
        return connection


class _GroupSync:
    """One fsync of the WAL for all the commits waiting for one (group commit).

    Commits of this process are numbered as they happen (`committed`, under the write
    lock, right after COMMIT). `wait_durable(n)` returns once an fsync that started after
    commit n has finished: the first waiter with no fsync running becomes the syncer and
    covers every commit numbered so far; the others wait for it, and commit while it runs.
    An fsync of the file covers what any connection or process wrote to it before.
    """

    def __init__(self, database: Path, fsync: Callable[[int], None]) -> None:
        self._database = database
        self._wal = database.with_name(database.name + "-wal")
        self._fsync = fsync
        self._changed = threading.Condition()
        self._committed = 0
        self._synced = 0
        self._syncing = False
        self._wal_seen: tuple[int, int] | None = None

    def committed(self) -> int:
        """Number a commit that has just happened."""
        with self._changed:
            self._committed += 1
            return self._committed

    def wait_durable(self, ticket: int) -> None:
        """Return once commit `ticket` is on disk; raises OSError if the fsync failed."""
        with self._changed:
            while self._synced < ticket and self._syncing:
                self._changed.wait()
            if self._synced >= ticket:
                return
            self._syncing = True
            target = self._committed
        synced = False
        try:
            self._sync_files()
            synced = True
        finally:
            with self._changed:
                self._syncing = False
                if synced:
                    self._synced = max(self._synced, target)
                self._changed.notify_all()

    def _sync_files(self) -> None:
        # The WAL holds every commit not yet checkpointed; a checkpoint syncs the WAL and
        # then the database, so without a WAL file everything is in the synced database.
        # A WAL file not seen before has its directory entry synced too (SQLite does that
        # on its own first sync of a new WAL, which NORMAL leaves to the checkpoint).
        for path in (self._wal, self._database):
            try:
                descriptor = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                continue
            try:
                self._fsync(descriptor)
                identity = os.fstat(descriptor)
            finally:
                os.close(descriptor)
            if path == self._wal and (identity.st_dev, identity.st_ino) != self._wal_seen:
                self._sync_directory()
                self._wal_seen = (identity.st_dev, identity.st_ino)
            return

    def _sync_directory(self) -> None:
        descriptor = os.open(self._database.parent, os.O_RDONLY)
        try:
            self._fsync(descriptor)
        finally:
            os.close(descriptor)


def _begin(connection: sqlite3.Connection, statement: str) -> None:
    try:
        connection.execute(statement)
    except sqlite3.OperationalError as error:
        if _is_busy(error):
            raise LedgerBusy(f"the ledger stayed locked: {error}") from error
        raise


def _run(connection: sqlite3.Connection) -> Iterator[SqliteTransaction]:
    try:
        yield SqliteTransaction(connection)
    except BaseException:
        _rollback(connection)
        raise
    try:
        connection.execute("COMMIT")
    except sqlite3.OperationalError as error:
        _rollback(connection)
        if _is_busy(error):
            raise LedgerBusy(f"the ledger stayed locked at commit: {error}") from error
        raise


def _rollback(connection: sqlite3.Connection) -> None:
    if connection.in_transaction:
        try:
            connection.execute("ROLLBACK")
        except sqlite3.Error:
            connection.close()


def _is_busy(error: sqlite3.OperationalError) -> bool:
    text = str(error).lower()
    return "locked" in text or "busy" in text


def _migrate(connection: sqlite3.Connection) -> None:
    """Apply the migrations newer than the file's schema version, in one transaction.

    An up-to-date file is only read, so opening the ledger never waits for writers.
    """
    known = MIGRATIONS[-1][0]
    if _schema_version(connection) == known:
        return
    _begin(connection, "BEGIN IMMEDIATE")
    try:
        connection.execute(
            "CREATE TABLE IF NOT EXISTS schema_version ("
            " version INTEGER PRIMARY KEY, description TEXT NOT NULL, applied_at TEXT NOT NULL"
            ") STRICT"
        )
        current = _schema_version(connection)
        if current > known:
            raise LedgerSchemaError(
                f"the ledger has schema version {current}, but this dpgate knows versions up"
                f" to {known}: a newer dpgate has migrated it; run that version (or newer)"
                " instead"
            )
        for version, description, statements in MIGRATIONS:
            if version <= current:
                continue
            for statement in statements:
                connection.execute(statement)
            connection.execute(
                "INSERT INTO schema_version (version, description, applied_at) VALUES (?, ?, ?)",
                (version, description, format_time(utc_now())),
            )
        connection.execute("COMMIT")
    except sqlite3.Error as error:
        _rollback(connection)
        if isinstance(error, sqlite3.OperationalError) and _is_busy(error):
            raise LedgerBusy(f"the ledger stayed locked while migrating: {error}") from error
        raise LedgerSchemaError(f"migrating the ledger failed: {error}") from error
    except BaseException:
        _rollback(connection)
        raise


def _schema_version(connection: sqlite3.Connection) -> int:
    """The highest applied migration, 0 for a new file."""
    exists = connection.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
    ).fetchone()
    if exists is None:
        return 0
    row = connection.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()
    return int(row[0])


class SqliteTransaction:
    """`StorageTransaction` on one connection inside an open transaction."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._db = connection

    def _insert(self, sql: str, parameters: tuple[Any, ...], what: str) -> None:
        try:
            self._db.execute(sql, parameters)
        except sqlite3.IntegrityError as error:
            text = str(error)
            if "UNIQUE" in text or "PRIMARY KEY" in text:
                raise AlreadyExists(f"{what} already exists") from error
            raise

    # requesters

    def insert_requester(self, requester: Requester) -> None:
        self._insert(
            "INSERT INTO requesters VALUES (?, ?, ?, ?, ?, ?)",
            (
                requester.requester_id,
                requester.name,
                requester.organisation,
                requester.agreement,
                int(requester.enabled),
                format_time(requester.created_at),
            ),
            f"requester {requester.requester_id!r}",
        )

    def get_requester(self, requester_id: str) -> Requester | None:
        row = self._db.execute(
            "SELECT * FROM requesters WHERE requester_id = ?", (requester_id,)
        ).fetchone()
        return None if row is None else _requester(row)

    def set_requester_enabled(self, requester_id: str, enabled: bool) -> None:
        self._db.execute(
            "UPDATE requesters SET enabled = ? WHERE requester_id = ?",
            (int(enabled), requester_id),
        )

    def list_requesters(self) -> list[Requester]:
        rows = self._db.execute("SELECT * FROM requesters ORDER BY requester_id")
        return [_requester(row) for row in rows]

    # tokens

    def insert_token(self, info: TokenInfo, token_hash: str) -> None:
        self._insert(
            "INSERT INTO tokens VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                info.token_id,
                token_hash,
                info.requester_id,
                info.role.value,
                json.dumps(sorted(info.practice_codes)),
                format_time(info.created_at),
                format_optional(info.expires_at),
                format_optional(info.revoked_at),
            ),
            f"token {info.token_id!r}",
        )

    def find_token_by_hash(self, token_hash: str) -> tuple[TokenInfo, str] | None:
        row = self._db.execute(
            "SELECT * FROM tokens WHERE token_hash = ?", (token_hash,)
        ).fetchone()
        return None if row is None else (_token(row), str(row[1]))

    def get_token(self, token_id: str) -> TokenInfo | None:
        row = self._db.execute("SELECT * FROM tokens WHERE token_id = ?", (token_id,)).fetchone()
        return None if row is None else _token(row)

    def set_token_revoked(self, token_id: str, revoked_at: dt.datetime) -> None:
        self._db.execute(
            "UPDATE tokens SET revoked_at = ? WHERE token_id = ?",
            (format_time(revoked_at), token_id),
        )

    def list_tokens(self, requester_id: str | None) -> list[TokenInfo]:
        if requester_id is None:
            rows = self._db.execute("SELECT * FROM tokens ORDER BY created_at, token_id")
        else:
            rows = self._db.execute(
                "SELECT * FROM tokens WHERE requester_id = ? ORDER BY created_at, token_id",
                (requester_id,),
            )
        return [_token(row) for row in rows]

    # datasets and caps

    def insert_dataset(self, dataset: Dataset) -> None:
        self._insert(
            "INSERT INTO datasets VALUES (?, ?, ?, ?, ?)",
            (
                dataset.dataset_id,
                dataset.accounting.value,
                dataset.cap_units,
                dataset.spent_units,
                int(dataset.share_releases),
            ),
            f"dataset {dataset.dataset_id!r}",
        )

    def get_dataset(self, dataset_id: str) -> Dataset | None:
        row = self._db.execute(
            "SELECT * FROM datasets WHERE dataset_id = ?", (dataset_id,)
        ).fetchone()
        return None if row is None else _dataset(row)

    def list_datasets(self) -> list[Dataset]:
        return [_dataset(row) for row in self._db.execute("SELECT * FROM datasets ORDER BY 1")]

    def set_dataset_cap(self, dataset_id: str, cap_units: int) -> None:
        self._db.execute(
            "UPDATE datasets SET cap_units = ? WHERE dataset_id = ?", (cap_units, dataset_id)
        )

    def get_current_version(self, dataset_id: str) -> str | None:
        row = self._db.execute(
            "SELECT version FROM current_versions WHERE dataset_id = ?", (dataset_id,)
        ).fetchone()
        return None if row is None else str(row[0])

    def put_current_version(self, dataset_id: str, version: str) -> None:
        self._db.execute(
            "INSERT INTO current_versions VALUES (?, ?)"
            " ON CONFLICT (dataset_id) DO UPDATE SET version = excluded.version",
            (dataset_id, version),
        )

    def list_current_versions(self) -> dict[str, str]:
        rows = self._db.execute("SELECT dataset_id, version FROM current_versions")
        return {str(d): str(v) for d, v in rows}

    def set_dataset_sharing(self, dataset_id: str, share_releases: bool) -> None:
        self._db.execute(
            "UPDATE datasets SET share_releases = ? WHERE dataset_id = ?",
            (int(share_releases), dataset_id),
        )

    def add_dataset_spent(self, dataset_id: str, units: int) -> None:
        self._db.execute(
            "UPDATE datasets SET spent_units = spent_units + ? WHERE dataset_id = ?",
            (units, dataset_id),
        )

    def insert_cap_change(self, change: CapChange) -> None:
        self._db.execute(
            "INSERT INTO cap_changes (dataset_id, cap_before_units, cap_after_units, reason,"
            " changed_by, changed_at) VALUES (?, ?, ?, ?, ?, ?)",
            (
                change.dataset_id,
                change.cap_before_units,
                change.cap_after_units,
                change.reason,
                change.changed_by,
                format_time(change.changed_at),
            ),
        )

    def list_cap_changes(self, dataset_id: str) -> list[CapChange]:
        rows = self._db.execute(
            "SELECT dataset_id, cap_before_units, cap_after_units, reason, changed_by,"
            " changed_at FROM cap_changes WHERE dataset_id = ? ORDER BY change_id",
            (dataset_id,),
        )
        return [
            CapChange(
                dataset_id=row[0],
                cap_before_units=row[1],
                cap_after_units=row[2],
                reason=row[3],
                changed_by=row[4],
                changed_at=parse_time(row[5]),
            )
            for row in rows
        ]

    # allocations

    def get_allocation(self, requester_id: str, dataset_id: str) -> Allocation | None:
        row = self._db.execute(
            "SELECT * FROM allocations WHERE requester_id = ? AND dataset_id = ?",
            (requester_id, dataset_id),
        ).fetchone()
        return None if row is None else _allocation(row)

    def put_allocation(self, allocation: Allocation) -> None:
        self._db.execute(
            "INSERT INTO allocations (requester_id, dataset_id, granted_units, spent_units,"
            " expires_at, purpose, agreement) VALUES (?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (requester_id, dataset_id) DO UPDATE SET"
            " granted_units = excluded.granted_units, spent_units = excluded.spent_units,"
            " expires_at = excluded.expires_at",
            (
                allocation.requester_id,
                allocation.dataset_id,
                allocation.granted_units,
                allocation.spent_units,
                format_optional(allocation.expires_at),
                allocation.purpose,
                allocation.agreement,
            ),
        )

    def add_allocation_spent(self, requester_id: str, dataset_id: str, units: int) -> None:
        self._db.execute(
            "UPDATE allocations SET spent_units = spent_units + ?"
            " WHERE requester_id = ? AND dataset_id = ?",
            (units, requester_id, dataset_id),
        )

    def list_allocations(self) -> list[Allocation]:
        rows = self._db.execute("SELECT * FROM allocations ORDER BY requester_id, dataset_id")
        return [_allocation(row) for row in rows]

    # releases and idempotency keys

    def find_releases(self, release_key: str) -> list[StoredRelease]:
        rows = self._db.execute(
            "SELECT * FROM releases WHERE release_key = ? ORDER BY rowid", (release_key,)
        )
        return [_release(row) for row in rows]

    def get_release(self, release_id: str) -> StoredRelease | None:
        row = self._db.execute(
            "SELECT * FROM releases WHERE release_id = ?", (release_id,)
        ).fetchone()
        return None if row is None else _release(row)

    def insert_release(self, release: StoredRelease) -> None:
        self._insert(
            "INSERT INTO releases (release_id, release_key, dataset_id, requester_id,"
            " cost_units, payload, created_at, request_id, dataset_version)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                release.release_id,
                release.release_key,
                release.dataset_id,
                release.requester_id,
                release.cost_units,
                release.payload,
                format_time(release.created_at),
                release.request_id,
                release.dataset_version,
            ),
            f"release {release.release_id!r}",
        )

    def list_releases(
        self, requester_id: str | None, dataset_id: str | None
    ) -> list[StoredRelease]:
        rows = self._db.execute(
            "SELECT * FROM releases WHERE (?1 IS NULL OR requester_id = ?1)"
            " AND (?2 IS NULL OR dataset_id = ?2) ORDER BY rowid",
            (requester_id, dataset_id),
        )
        return [_release(row) for row in rows]

    def list_releases_on_version(
        self, requester_id: str | None, dataset_id: str, dataset_version: str
    ) -> list[StoredRelease]:
        rows = self._db.execute(RELEASES_ON_VERSION, (requester_id, dataset_id, dataset_version))
        return [_release(row) for row in rows]

    def page_releases(
        self,
        requester_id: str,
        dataset_id: str | None,
        before_release_id: str | None,
        limit: int,
        *,
        inclusive: bool = False,
    ) -> list[StoredRelease]:
        rows = self._db.execute(
            "SELECT * FROM releases WHERE requester_id = ?1 AND (?2 IS NULL OR dataset_id = ?2)"
            " AND (?3 IS NULL OR rowid < (SELECT rowid FROM releases WHERE release_id = ?3)"
            " + ?5) ORDER BY rowid DESC LIMIT ?4",
            (requester_id, dataset_id, before_release_id, limit, 1 if inclusive else 0),
        )
        return [_release(row) for row in rows]

    def insert_derived(self, record: DerivedRecord) -> None:
        self._db.execute(
            "INSERT OR IGNORE INTO derived_answers VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                record.derived_id,
                record.requester_id,
                record.dataset_id,
                record.source_release_id,
                record.dataset_version,
                record.canonical_query,
                format_time(record.created_at),
                record.request_id,
            ),
        )

    def get_derived(self, requester_id: str, derived_id: str) -> DerivedRecord | None:
        row = self._db.execute(
            "SELECT * FROM derived_answers WHERE requester_id = ? AND derived_id = ?",
            (requester_id, derived_id),
        ).fetchone()
        return None if row is None else _derived(row)

    def page_derived(
        self, requester_id: str, dataset_id: str | None, from_derived_id: str | None, limit: int
    ) -> list[DerivedRecord]:
        rows = self._db.execute(
            "SELECT * FROM derived_answers WHERE requester_id = ?1"
            " AND (?2 IS NULL OR dataset_id = ?2) AND (?3 IS NULL OR rowid <= (SELECT rowid"
            " FROM derived_answers WHERE requester_id = ?1 AND derived_id = ?3))"
            " ORDER BY rowid DESC LIMIT ?4",
            (requester_id, dataset_id, from_derived_id, limit),
        )
        return [_derived(row) for row in rows]

    def insert_publish_spend(self, spend: PublishSpend) -> None:
        self._insert(
            "INSERT INTO publish_spends VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                spend.spend_id,
                spend.dataset_id,
                spend.dataset_version,
                spend.purpose,
                spend.cost_units,
                format_time(spend.created_at),
                spend.request_id,
            ),
            f"publish spend {spend.spend_id!r}",
        )

    def list_publish_spends(
        self, dataset_id: str | None, dataset_version: str | None = None
    ) -> list[PublishSpend]:
        rows = self._db.execute(
            "SELECT * FROM publish_spends WHERE (?1 IS NULL OR dataset_id = ?1)"
            " AND (?2 IS NULL OR dataset_version = ?2) ORDER BY rowid",
            (dataset_id, dataset_version),
        )
        return [_publish_spend(row) for row in rows]

    def find_received_releases(
        self, requester_id: str, release_keys: Sequence[str]
    ) -> list[StoredRelease]:
        if not release_keys:
            return []
        marks = ", ".join("?" * len(release_keys))
        rows = self._db.execute(
            f"SELECT * FROM releases r WHERE release_key IN ({marks})"  # noqa: S608 - marks only
            " AND (requester_id = ? OR EXISTS (SELECT 1 FROM idempotency_keys i"
            " WHERE i.requester_id = ? AND i.release_id = r.release_id)) ORDER BY rowid",
            (*release_keys, requester_id, requester_id),
        )
        return [_release(row) for row in rows]

    def release_totals(self) -> list[ReleaseTotal]:
        rows = self._db.execute(
            "SELECT requester_id, dataset_id, count(*), sum(cost_units), max(created_at)"
            " FROM releases GROUP BY requester_id, dataset_id ORDER BY requester_id, dataset_id"
        )
        return [
            ReleaseTotal(row[0], row[1], int(row[2]), int(row[3]), parse_time(row[4]))
            for row in rows
        ]

    def get_idempotency(self, requester_id: str, key: str) -> IdempotencyRecord | None:
        row = self._db.execute(
            f"SELECT {IDEMPOTENCY_COLUMNS} FROM idempotency_keys"  # noqa: S608 - a constant
            " WHERE requester_id = ? AND idempotency_key = ?",
            (requester_id, key),
        ).fetchone()
        return None if row is None else idempotency_record(row)

    def insert_idempotency(
        self, requester_id: str, key: str, record: IdempotencyRecord, at: dt.datetime
    ) -> None:
        answer = record.first_answer
        self._insert(
            "INSERT INTO idempotency_keys (requester_id, idempotency_key, release_key,"
            " release_id, created_at, first_charged_units, first_remaining_units, first_repeat)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                requester_id,
                key,
                record.release_key,
                record.release_id,
                format_time(at),
                None if answer is None else answer.charged_units,
                None if answer is None else answer.remaining_units,
                None if answer is None else int(answer.repeat),
            ),
            f"idempotency key {key!r}",
        )

    # audit chain

    def get_head(self) -> ChainHead:
        row = self._db.execute(
            "SELECT event_count, head_hash FROM audit_head WHERE singleton = 1"
        ).fetchone()
        return ChainHead(count=int(row[0]), hash=str(row[1]))

    def append_event(self, event: AuditEvent) -> None:
        self._db.execute(
            "INSERT INTO audit_events VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                event.seq,
                format_time(event.at),
                event.requester_id,
                event.token_id,
                event.role,
                event.rpc,
                event.query_text,
                event.dataset_id,
                event.cost_units,
                event.outcome.value,
                event.release_id,
                event.request_id,
                event.detail,
                event.prev_hash,
                event.event_hash,
            ),
        )
        self._db.execute(
            "UPDATE audit_head SET event_count = ?, head_hash = ? WHERE singleton = 1",
            (event.seq, event.event_hash),
        )

    def iter_events(self, first_seq: int = 1) -> Iterator[AuditEvent]:
        cursor = self._db.execute(
            "SELECT * FROM audit_events WHERE seq >= ? ORDER BY seq", (first_seq,)
        )
        for row in cursor:
            yield _event(row)

    def list_events(self, after_seq: int, limit: int) -> list[AuditEvent]:
        rows = self._db.execute(
            "SELECT * FROM audit_events WHERE seq > ? ORDER BY seq LIMIT ?", (after_seq, limit)
        )
        return [_event(row) for row in rows]

    # unauthenticated counts stored by an earlier version (now counted in memory)

    def list_pending_unauthenticated(self) -> list[PendingUnauthenticated]:
        rows = self._db.execute(
            "SELECT * FROM unauthenticated_pending ORDER BY window_start, source"
        )
        return [
            PendingUnauthenticated(
                source=row[0],
                window_start=parse_time(row[1]),
                count=int(row[2]),
                first_rpc=row[3],
                first_request_id=row[4],
                last_at=parse_time(row[5]),
            )
            for row in rows
        ]

    def delete_pending_unauthenticated(self, source: str, window_start: dt.datetime) -> None:
        self._db.execute(
            "DELETE FROM unauthenticated_pending WHERE source = ? AND window_start = ?",
            (source, format_time(window_start)),
        )


def _requester(row: Any) -> Requester:
    return Requester(
        requester_id=row[0],
        name=row[1],
        organisation=row[2],
        agreement=row[3],
        enabled=bool(row[4]),
        created_at=parse_time(row[5]),
    )


def _token(row: Any) -> TokenInfo:
    return TokenInfo(
        token_id=row[0],
        requester_id=row[2],
        role=Role(row[3]),
        practice_codes=frozenset(json.loads(row[4])),
        created_at=parse_time(row[5]),
        expires_at=parse_optional(row[6]),
        revoked_at=parse_optional(row[7]),
    )


def _dataset(row: Any) -> Dataset:
    return Dataset(
        dataset_id=row[0],
        accounting=Accounting(row[1]),
        cap_units=int(row[2]),
        spent_units=int(row[3]),
        share_releases=bool(row[4]),
    )


def _allocation(row: Any) -> Allocation:
    return Allocation(
        requester_id=row[0],
        dataset_id=row[1],
        granted_units=int(row[2]),
        spent_units=int(row[3]),
        expires_at=parse_optional(row[4]),
        purpose=row[5],
        agreement=row[6],
    )


def _derived(row: Any) -> DerivedRecord:
    return DerivedRecord(
        derived_id=row[0],
        requester_id=row[1],
        dataset_id=row[2],
        source_release_id=row[3],
        dataset_version=row[4],
        canonical_query=row[5],
        created_at=parse_time(row[6]),
        request_id=row[7],
    )


def _publish_spend(row: Any) -> PublishSpend:
    return PublishSpend(
        spend_id=row[0],
        dataset_id=row[1],
        dataset_version=row[2],
        purpose=row[3],
        cost_units=int(row[4]),
        created_at=parse_time(row[5]),
        request_id=row[6],
    )


def _release(row: Any) -> StoredRelease:
    return StoredRelease(
        release_id=row[0],
        release_key=row[1],
        dataset_id=row[2],
        requester_id=row[3],
        cost_units=int(row[4]),
        payload=bytes(row[5]),
        created_at=parse_time(row[6]),
        request_id=row[7],
        dataset_version=row[8] if len(row) > 8 else None,
    )


def _event(row: Any) -> AuditEvent:
    return AuditEvent(
        seq=int(row[0]),
        at=parse_time(row[1]),
        requester_id=row[2],
        token_id=row[3],
        role=row[4],
        rpc=row[5],
        query_text=row[6],
        dataset_id=row[7],
        cost_units=int(row[8]),
        outcome=Outcome(row[9]),
        release_id=row[10],
        request_id=row[11],
        detail=row[12],
        prev_hash=row[13],
        event_hash=row[14],
    )

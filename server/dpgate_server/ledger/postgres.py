"""The PostgreSQL ledger storage: one database shared by any number of server processes.

How it keeps the ledger's promises with concurrent writers on many machines:
- Every write transaction first locks the audit chain's head row (`SELECT ... FOR UPDATE`).
  Every write appends to the chain anyway, so writers are serial; taking that one lock
  first makes the debit's check-then-record race-free (no overspend), keeps the chain
  linear, and cannot deadlock (every writer takes the same lock first). Under READ
  COMMITTED each later statement sees everything committed by the previous lock holder.
- Reads run in REPEATABLE READ READ ONLY transactions: one snapshot, never blocking.
- `lock_timeout` bounds the wait for the head lock; past it, `LedgerBusy` (as SQLite's
  busy timeout). A lost database is `LedgerUnavailable` (see `postgres_connections`).
- Writes set `synchronous_commit = on` whatever the server's default: a debit that
  returned must survive a crash of the database (asynchronous commit could forget it and
  so refund spent budget). The server's own `fsync` must stay on too.
- Migrations run at open under a transaction-level advisory lock, so replicas starting
  together migrate once; DDL is transactional, so a failed migration leaves nothing.
- Insertions use `ON CONFLICT DO NOTHING` and report a duplicate as `AlreadyExists`
  without aborting the transaction (PostgreSQL would refuse every later statement).

Units are BIGINT (64-bit, as in SQLite); times TIMESTAMPTZ, read back as UTC.
"""
# ruff: noqa: S608 - statements splice only this module's constant column lists and table
# names; every value travels as a bound parameter.

from __future__ import annotations

import datetime as dt
import json
import threading
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any, LiteralString

import psycopg
from psycopg import errors as pg_errors
from psycopg.rows import TupleRow

from dpgate_server.ledger._time import utc_now
from dpgate_server.ledger.errors import AlreadyExists, LedgerBusy, LedgerSchemaError
from dpgate_server.ledger.flights import Flight, PostgresFlights
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
from dpgate_server.ledger.postgres_connections import ConnectionPool
from dpgate_server.ledger.postgres_schema import MIGRATIONS
from dpgate_server.ledger.storage import (
    IDEMPOTENCY_COLUMNS,
    IdempotencyRecord,
    PendingUnauthenticated,
    ReleaseTotal,
    idempotency_record,
)
from dpgate_server.vocabulary.accounting import Accounting

DEFAULT_BUSY_TIMEOUT_S = 30.0
"""How long a writer waits for the chain-head lock before `LedgerBusy`."""
DEFAULT_CONNECT_TIMEOUT_S = 5.0
"""How long connecting may take before the database counts as unreachable."""
DEFAULT_MAX_CONNECTIONS = 16
"""Connections one process keeps at most (the server's RPC threads share them)."""
_MIGRATION_LOCK_KEY = 0x6470_6761_7465_0001
"""pg_advisory_xact_lock key held while migrating ("dpgate" + 1)."""
_EVENTS_PER_FETCH = 1000

_Connection = psycopg.Connection[TupleRow]


class PostgresStorage:
    """`LedgerStorage` over one PostgreSQL database; safe to share between threads."""

    def __init__(
        self,
        url: str,
        *,
        busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S,
        connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
    ) -> None:
        """Connect to `url` and apply pending migrations.

        Raises:
            LedgerUnavailable: the database cannot be reached.
            LedgerSchemaError: the database was migrated by a newer version of dpgate.
        """
        self._pool = ConnectionPool(
            url,
            max_connections=max_connections,
            connect_timeout_s=connect_timeout_s,
            wait_timeout_s=busy_timeout_s,
        )
        self._busy_timeout_s = busy_timeout_s
        self._write_lock = threading.Lock()
        lock_ms = max(1, round(busy_timeout_s * 1000))
        self._begin_write = (
            f"BEGIN; SET LOCAL lock_timeout = {lock_ms}; SET LOCAL synchronous_commit = on;"
            " SELECT 1 FROM audit_head WHERE singleton = 1 FOR UPDATE"
        )
        connection = self._pool.connect()
        try:
            _migrate(connection, self._pool)
        except BaseException:
            connection.close()
            raise
        self._pool.give_back(connection)  # the first transaction reuses it
        self._flights = PostgresFlights(
            ConnectionPool(
                url,
                max_connections=max(1, max_connections // 2),
                connect_timeout_s=connect_timeout_s,
                wait_timeout_s=0.0,  # none free: compute without the lock, never queue
            )
        )

    @property
    def name(self) -> str:
        """The database's URL without its password."""
        return self._pool.name

    def schema_version(self) -> int:
        """The highest migration applied to the database."""
        with self.read() as tx:
            return tx.schema_version()

    @contextmanager
    def write(self) -> Iterator[PostgresTransaction]:
        """A transaction holding the chain-head lock: commits on success, rolls back on error.

        Writers of this process first queue on a Python lock, as with SQLite: only one of
        them can hold the head lock anyway, and queueing here costs no connection and no
        database backend waiting on a row lock. Across processes the row lock arbitrates.
        """
        if not self._write_lock.acquire(timeout=self._busy_timeout_s):
            raise LedgerBusy("the ledger stayed locked by other writers of this process")
        try:
            with self._transaction(self._begin_write, "writing") as tx:
                yield tx
        finally:
            self._write_lock.release()

    @contextmanager
    def read(self) -> Iterator[PostgresTransaction]:
        """A read-only REPEATABLE READ transaction: one consistent snapshot."""
        with self._transaction("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", "reading") as tx:
            yield tx

    def flight(self, release_key: str, wait_s: float) -> AbstractContextManager[Flight]:
        """An advisory transaction lock on the release key (see `ledger/flights.py`), on
        its own connections: at most half of `max_connections` more per process."""
        return self._flights.hold(release_key, wait_s)

    def close(self) -> None:
        """Close idle connections; connections in use close when given back."""
        self._pool.close()
        self._flights.close()

    @contextmanager
    def _transaction(self, begin: str, doing: str) -> Iterator[PostgresTransaction]:
        self._pool.acquire()
        try:
            connection = self._begin(begin, doing)
            try:
                yield from self._run(connection, doing)
            finally:
                self._pool.give_back(connection)
        finally:
            self._pool.release()

    def _begin(self, begin: str, doing: str) -> _Connection:
        """A connection inside a new transaction; a dead pooled one is replaced once."""
        connection, reused = self._pool.take()
        try:
            connection.execute(begin)
            return connection
        except psycopg.Error as error:
            _rollback(connection)
            if not _connection_lost(error):  # e.g. the head lock timed out: keep the connection
                self._pool.give_back(connection)
                raise self._translated(error, doing) from None
            connection.close()
            if not reused:
                raise self._translated(error, doing) from None
        self._pool.discard_idle()  # the database restarted: the other idle ones are dead too
        connection = self._pool.connect()
        try:
            connection.execute(begin)
        except psycopg.Error as error:
            connection.close()
            raise self._translated(error, doing) from None
        return connection

    def _run(self, connection: _Connection, doing: str) -> Iterator[PostgresTransaction]:
        try:
            yield PostgresTransaction(connection)
        except psycopg.Error as error:
            _rollback(connection)
            if _connection_lost(error):
                self._pool.discard_idle()
            raise self._translated(error, doing) from error
        except BaseException:
            _rollback(connection)
            raise
        try:
            connection.execute("COMMIT")
        except psycopg.Error as error:
            _rollback(connection)
            if _connection_lost(error):
                self._pool.discard_idle()
            raise self._translated(error, "committing") from error

    def _translated(self, error: psycopg.Error, doing: str) -> Exception:
        return self._pool.translate(error, doing)


def _connection_lost(error: psycopg.Error) -> bool:
    return isinstance(error, psycopg.OperationalError | psycopg.InterfaceError) and not isinstance(
        error, pg_errors.LockNotAvailable | pg_errors.TransactionRollback
    )


def _rollback(connection: _Connection) -> None:
    if connection.closed:
        return
    if connection.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
        return
    try:
        connection.execute("ROLLBACK")
    except psycopg.Error:
        connection.close()


def _migrate(connection: _Connection, pool: ConnectionPool) -> None:
    """Apply the migrations newer than the database's schema, in one transaction.

    An up-to-date database is only read, so a starting replica never waits on others.

    Raises:
        LedgerSchemaError: the database's schema is newer than this code's.
        LedgerUnavailable: the connection was lost.
    """
    known = MIGRATIONS[-1][0]
    try:
        current = _schema_version(connection)
        _refuse_newer(current, known, pool.name)
        if current == known:
            return
        connection.execute("BEGIN")
        connection.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK_KEY,))
        connection.execute(
            "CREATE TABLE IF NOT EXISTS schema_version ("
            " version INTEGER PRIMARY KEY, description TEXT NOT NULL,"
            " applied_at TIMESTAMPTZ NOT NULL)"
        )
        current = _schema_version(connection)  # another replica may have migrated meanwhile
        _refuse_newer(current, known, pool.name)
        for version, description, statements in MIGRATIONS:
            if version <= current:
                continue
            for statement in statements:
                connection.execute(statement)
            connection.execute(
                "INSERT INTO schema_version (version, description, applied_at) VALUES (%s, %s, %s)",
                (version, description, utc_now()),
            )
        connection.execute("COMMIT")
    except LedgerSchemaError:
        _rollback(connection)
        raise
    except psycopg.Error as error:
        _rollback(connection)
        translated = pool.translate(error, "migrating its schema")
        if translated is error:
            raise LedgerSchemaError(
                f"migrating the ledger database {pool.name} failed: {pool.redact(error)}"
            ) from None
        raise translated from None


def _refuse_newer(current: int, known: int, name: str) -> None:
    if current > known:
        raise LedgerSchemaError(
            f"the ledger database {name} has schema version {current}, but this dpgate"
            f" knows versions up to {known}: a newer dpgate has migrated it; run that version"
            " (or newer) instead"
        )


def _schema_version(connection: _Connection) -> int:
    """The highest applied migration, 0 for an empty database."""
    row = connection.execute("SELECT to_regclass('schema_version') IS NOT NULL").fetchone()
    if row is None or not row[0]:
        return 0
    row = connection.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()
    return 0 if row is None else int(row[0])


_REQUESTER = "requester_id, name, organisation, agreement, enabled, created_at"
_TOKENS = (
    "token_id, token_hash, requester_id, role, practice_codes, created_at, expires_at, revoked_at"
)
_DATASET = "dataset_id, accounting, cap_units, spent_units, share_releases"
_ALLOCATION = "requester_id, dataset_id, granted_units, spent_units, expires_at, purpose, agreement"
_RELEASE = (
    "release_id, release_key, dataset_id, requester_id, cost_units, payload, created_at,"
    " request_id, dataset_version"
)
_EVENT = (
    "seq, at, requester_id, token_id, role, rpc, query_text, dataset_id, cost_units, outcome,"
    " release_id, request_id, detail, prev_hash, event_hash"
)
_PENDING = "source, window_start, request_count, first_rpc, first_request_id, last_at"
_PUBLISH_SPEND = (
    "spend_id, dataset_id, dataset_version, purpose, cost_units, created_at, request_id"
)
_DERIVED = (
    "derived_id, requester_id, dataset_id, source_release_id, dataset_version, canonical_query,"
    " created_at, request_id"
)


class PostgresTransaction:
    """`StorageTransaction` on one connection inside an open transaction."""

    def __init__(self, connection: _Connection) -> None:
        self._db = connection

    def _one(self, sql: LiteralString, parameters: tuple[Any, ...] = ()) -> tuple[Any, ...] | None:
        return self._db.execute(sql, parameters).fetchone()

    def _all(self, sql: LiteralString, parameters: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        return self._db.execute(sql, parameters).fetchall()

    def _run(self, sql: LiteralString, parameters: tuple[Any, ...]) -> int:
        return self._db.execute(sql, parameters).rowcount

    def _insert(
        self, table: LiteralString, columns: LiteralString, parameters: tuple[Any, ...], what: str
    ) -> None:
        marks = ", ".join(["%s"] * len(parameters))
        inserted = self._run(
            f"INSERT INTO {table} ({columns}) VALUES ({marks}) ON CONFLICT DO NOTHING",
            parameters,
        )
        if inserted != 1:
            raise AlreadyExists(f"{what} already exists")

    def schema_version(self) -> int:
        """The highest applied migration (inside this transaction's snapshot)."""
        return _schema_version(self._db)

    # requesters

    def insert_requester(self, requester: Requester) -> None:
        self._insert(
            "requesters",
            _REQUESTER,
            (
                requester.requester_id,
                requester.name,
                requester.organisation,
                requester.agreement,
                requester.enabled,
                _aware(requester.created_at),
            ),
            f"requester {requester.requester_id!r}",
        )

    def get_requester(self, requester_id: str) -> Requester | None:
        row = self._one(
            f"SELECT {_REQUESTER} FROM requesters WHERE requester_id = %s", (requester_id,)
        )
        return None if row is None else _requester(row)

    def set_requester_enabled(self, requester_id: str, enabled: bool) -> None:
        self._run(
            "UPDATE requesters SET enabled = %s WHERE requester_id = %s", (enabled, requester_id)
        )

    def list_requesters(self) -> list[Requester]:
        rows = self._all(f"SELECT {_REQUESTER} FROM requesters ORDER BY requester_id")
        return [_requester(row) for row in rows]

    # tokens

    def insert_token(self, info: TokenInfo, token_hash: str) -> None:
        self._insert(
            "tokens",
            _TOKENS,
            (
                info.token_id,
                token_hash,
                info.requester_id,
                info.role.value,
                json.dumps(sorted(info.practice_codes)),
                _aware(info.created_at),
                _aware_or_none(info.expires_at),
                _aware_or_none(info.revoked_at),
            ),
            f"token {info.token_id!r}",
        )

    def find_token_by_hash(self, token_hash: str) -> tuple[TokenInfo, str] | None:
        row = self._one(f"SELECT {_TOKENS} FROM tokens WHERE token_hash = %s", (token_hash,))
        return None if row is None else (_token(row), str(row[1]))

    def get_token(self, token_id: str) -> TokenInfo | None:
        row = self._one(f"SELECT {_TOKENS} FROM tokens WHERE token_id = %s", (token_id,))
        return None if row is None else _token(row)

    def set_token_revoked(self, token_id: str, revoked_at: dt.datetime) -> None:
        self._run(
            "UPDATE tokens SET revoked_at = %s WHERE token_id = %s", (_aware(revoked_at), token_id)
        )

    def list_tokens(self, requester_id: str | None) -> list[TokenInfo]:
        rows = self._all(
            f"SELECT {_TOKENS} FROM tokens WHERE (%s::text IS NULL OR requester_id = %s)"
            " ORDER BY created_at, token_id",
            (requester_id, requester_id),
        )
        return [_token(row) for row in rows]

    # datasets and caps

    def insert_dataset(self, dataset: Dataset) -> None:
        self._insert(
            "datasets",
            _DATASET,
            (
                dataset.dataset_id,
                dataset.accounting.value,
                dataset.cap_units,
                dataset.spent_units,
                dataset.share_releases,
            ),
            f"dataset {dataset.dataset_id!r}",
        )

    def get_dataset(self, dataset_id: str) -> Dataset | None:
        row = self._one(f"SELECT {_DATASET} FROM datasets WHERE dataset_id = %s", (dataset_id,))
        return None if row is None else _dataset(row)

    def list_datasets(self) -> list[Dataset]:
        return [_dataset(row) for row in self._all(f"SELECT {_DATASET} FROM datasets ORDER BY 1")]

    def set_dataset_cap(self, dataset_id: str, cap_units: int) -> None:
        self._run(
            "UPDATE datasets SET cap_units = %s WHERE dataset_id = %s", (cap_units, dataset_id)
        )

    def get_current_version(self, dataset_id: str) -> str | None:
        row = self._one("SELECT version FROM current_versions WHERE dataset_id = %s", (dataset_id,))
        return None if row is None else str(row[0])

    def put_current_version(self, dataset_id: str, version: str) -> None:
        self._run(
            "INSERT INTO current_versions VALUES (%s, %s)"
            " ON CONFLICT (dataset_id) DO UPDATE SET version = excluded.version",
            (dataset_id, version),
        )

    def list_current_versions(self) -> dict[str, str]:
        rows = self._all("SELECT dataset_id, version FROM current_versions")
        return {str(d): str(v) for d, v in rows}

    def set_dataset_sharing(self, dataset_id: str, share_releases: bool) -> None:
        self._run(
            "UPDATE datasets SET share_releases = %s WHERE dataset_id = %s",
            (share_releases, dataset_id),
        )

    def add_dataset_spent(self, dataset_id: str, units: int) -> None:
        self._run(
            "UPDATE datasets SET spent_units = spent_units + %s WHERE dataset_id = %s",
            (units, dataset_id),
        )

    def insert_cap_change(self, change: CapChange) -> None:
        self._run(
            "INSERT INTO cap_changes (dataset_id, cap_before_units, cap_after_units, reason,"
            " changed_by, changed_at) VALUES (%s, %s, %s, %s, %s, %s)",
            (
                change.dataset_id,
                change.cap_before_units,
                change.cap_after_units,
                change.reason,
                change.changed_by,
                _aware(change.changed_at),
            ),
        )

    def list_cap_changes(self, dataset_id: str) -> list[CapChange]:
        rows = self._all(
            "SELECT dataset_id, cap_before_units, cap_after_units, reason, changed_by,"
            " changed_at FROM cap_changes WHERE dataset_id = %s ORDER BY change_id",
            (dataset_id,),
        )
        return [
            CapChange(
                dataset_id=row[0],
                cap_before_units=int(row[1]),
                cap_after_units=int(row[2]),
                reason=row[3],
                changed_by=row[4],
                changed_at=_utc(row[5]),
            )
            for row in rows
        ]

    # allocations

    def get_allocation(self, requester_id: str, dataset_id: str) -> Allocation | None:
        row = self._one(
            f"SELECT {_ALLOCATION} FROM allocations WHERE requester_id = %s AND dataset_id = %s",
            (requester_id, dataset_id),
        )
        return None if row is None else _allocation(row)

    def put_allocation(self, allocation: Allocation) -> None:
        self._run(
            f"INSERT INTO allocations ({_ALLOCATION}) VALUES (%s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (requester_id, dataset_id) DO UPDATE SET"
            " granted_units = excluded.granted_units, spent_units = excluded.spent_units,"
            " expires_at = excluded.expires_at",
            (
                allocation.requester_id,
                allocation.dataset_id,
                allocation.granted_units,
                allocation.spent_units,
                _aware_or_none(allocation.expires_at),
                allocation.purpose,
                allocation.agreement,
            ),
        )

    def add_allocation_spent(self, requester_id: str, dataset_id: str, units: int) -> None:
        self._run(
            "UPDATE allocations SET spent_units = spent_units + %s"
            " WHERE requester_id = %s AND dataset_id = %s",
            (units, requester_id, dataset_id),
        )

    def list_allocations(self) -> list[Allocation]:
        rows = self._all(f"SELECT {_ALLOCATION} FROM allocations ORDER BY requester_id, dataset_id")
        return [_allocation(row) for row in rows]

    # releases and idempotency keys

    def find_releases(self, release_key: str) -> list[StoredRelease]:
        rows = self._all(
            f"SELECT {_RELEASE} FROM releases WHERE release_key = %s ORDER BY release_seq",
            (release_key,),
        )
        return [_release(row) for row in rows]

    def get_release(self, release_id: str) -> StoredRelease | None:
        row = self._one(f"SELECT {_RELEASE} FROM releases WHERE release_id = %s", (release_id,))
        return None if row is None else _release(row)

    def insert_release(self, release: StoredRelease) -> None:
        self._insert(
            "releases",
            _RELEASE,
            (
                release.release_id,
                release.release_key,
                release.dataset_id,
                release.requester_id,
                release.cost_units,
                release.payload,
                _aware(release.created_at),
                release.request_id,
                release.dataset_version,
            ),
            f"release {release.release_id!r}",
        )

    def list_releases(
        self, requester_id: str | None, dataset_id: str | None
    ) -> list[StoredRelease]:
        rows = self._all(
            f"SELECT {_RELEASE} FROM releases WHERE (%s::text IS NULL OR requester_id = %s)"
            " AND (%s::text IS NULL OR dataset_id = %s) ORDER BY release_seq",
            (requester_id, requester_id, dataset_id, dataset_id),
        )
        return [_release(row) for row in rows]

    def list_releases_on_version(
        self, requester_id: str | None, dataset_id: str, dataset_version: str
    ) -> list[StoredRelease]:
        rows = self._all(
            f"SELECT {_RELEASE} FROM releases WHERE dataset_id = %s"
            " AND (dataset_version = %s OR dataset_version IS NULL)"
            " AND (%s::text IS NULL OR requester_id = %s) ORDER BY release_seq",
            (dataset_id, dataset_version, requester_id, requester_id),
        )
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
        rows = self._all(
            f"SELECT {_RELEASE} FROM releases WHERE requester_id = %s"
            " AND (%s::text IS NULL OR dataset_id = %s) AND (%s::text IS NULL OR release_seq <"
            " (SELECT release_seq FROM releases WHERE release_id = %s) + %s)"
            " ORDER BY release_seq DESC LIMIT %s",
            (
                requester_id,
                dataset_id,
                dataset_id,
                before_release_id,
                before_release_id,
                1 if inclusive else 0,
                limit,
            ),
        )
        return [_release(row) for row in rows]

    def insert_derived(self, record: DerivedRecord) -> None:
        self._run(
            f"INSERT INTO derived_answers ({_DERIVED}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT DO NOTHING",
            (
                record.derived_id,
                record.requester_id,
                record.dataset_id,
                record.source_release_id,
                record.dataset_version,
                record.canonical_query,
                _aware(record.created_at),
                record.request_id,
            ),
        )

    def get_derived(self, requester_id: str, derived_id: str) -> DerivedRecord | None:
        row = self._one(
            f"SELECT {_DERIVED} FROM derived_answers WHERE requester_id = %s AND derived_id = %s",
            (requester_id, derived_id),
        )
        return None if row is None else _derived(row)

    def page_derived(
        self, requester_id: str, dataset_id: str | None, from_derived_id: str | None, limit: int
    ) -> list[DerivedRecord]:
        rows = self._all(
            f"SELECT {_DERIVED} FROM derived_answers WHERE requester_id = %s"
            " AND (%s::text IS NULL OR dataset_id = %s) AND (%s::text IS NULL OR derived_seq <="
            " (SELECT derived_seq FROM derived_answers WHERE requester_id = %s"
            " AND derived_id = %s)) ORDER BY derived_seq DESC LIMIT %s",
            (
                requester_id,
                dataset_id,
                dataset_id,
                from_derived_id,
                requester_id,
                from_derived_id,
                limit,
            ),
        )
        return [_derived(row) for row in rows]

    def insert_publish_spend(self, spend: PublishSpend) -> None:
        self._insert(
            "publish_spends",
            _PUBLISH_SPEND,
            (
                spend.spend_id,
                spend.dataset_id,
                spend.dataset_version,
                spend.purpose,
                spend.cost_units,
                _aware(spend.created_at),
                spend.request_id,
            ),
            f"publish spend {spend.spend_id!r}",
        )

    def list_publish_spends(
        self, dataset_id: str | None, dataset_version: str | None = None
    ) -> list[PublishSpend]:
        rows = self._all(
            f"SELECT {_PUBLISH_SPEND} FROM publish_spends"
            " WHERE (%s::text IS NULL OR dataset_id = %s)"
            " AND (%s::text IS NULL OR dataset_version = %s) ORDER BY spend_seq",
            (dataset_id, dataset_id, dataset_version, dataset_version),
        )
        return [_publish_spend(row) for row in rows]

    def find_received_releases(
        self, requester_id: str, release_keys: Sequence[str]
    ) -> list[StoredRelease]:
        rows = self._all(
            f"SELECT {_RELEASE} FROM releases r WHERE release_key = ANY(%s)"
            " AND (requester_id = %s OR EXISTS (SELECT 1 FROM idempotency_keys i"
            " WHERE i.requester_id = %s AND i.release_id = r.release_id)) ORDER BY release_seq",
            (list(release_keys), requester_id, requester_id),
        )
        return [_release(row) for row in rows]

    def release_totals(self) -> list[ReleaseTotal]:
        rows = self._all(
            "SELECT requester_id, dataset_id, count(*), sum(cost_units), max(created_at)"
            " FROM releases GROUP BY requester_id, dataset_id ORDER BY requester_id, dataset_id"
        )
        return [
            ReleaseTotal(row[0], row[1], int(row[2]), int(row[3]), _utc(row[4])) for row in rows
        ]

    def get_idempotency(self, requester_id: str, key: str) -> IdempotencyRecord | None:
        row = self._one(
            f"SELECT {IDEMPOTENCY_COLUMNS} FROM idempotency_keys"
            " WHERE requester_id = %s AND idempotency_key = %s",
            (requester_id, key),
        )
        return None if row is None else idempotency_record(row)

    def insert_idempotency(
        self, requester_id: str, key: str, record: IdempotencyRecord, at: dt.datetime
    ) -> None:
        answer = record.first_answer
        self._insert(
            "idempotency_keys",
            "requester_id, idempotency_key, release_key, release_id, created_at,"
            " first_charged_units, first_remaining_units, first_repeat",
            (
                requester_id,
                key,
                record.release_key,
                record.release_id,
                _aware(at),
                None if answer is None else answer.charged_units,
                None if answer is None else answer.remaining_units,
                None if answer is None else answer.repeat,
            ),
            f"idempotency key {key!r}",
        )

    # audit chain

    def get_head(self) -> ChainHead:
        row = self._one("SELECT event_count, head_hash FROM audit_head WHERE singleton = 1")
        if row is None:  # pragma: no cover - the first migration inserts it
            raise LedgerSchemaError("the ledger database has no audit_head row")
        return ChainHead(count=int(row[0]), hash=str(row[1]))

    def append_event(self, event: AuditEvent) -> None:
        self._run(
            f"INSERT INTO audit_events ({_EVENT}) VALUES"
            " (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (
                event.seq,
                _aware(event.at),
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
        self._run(
            "UPDATE audit_head SET event_count = %s, head_hash = %s WHERE singleton = 1",
            (event.seq, event.event_hash),
        )

    def iter_events(self, first_seq: int = 1) -> Iterator[AuditEvent]:
        """Events from `first_seq` on, fetched in pages within this transaction's snapshot."""
        after = first_seq - 1
        while True:
            rows = self._all(
                f"SELECT {_EVENT} FROM audit_events WHERE seq > %s ORDER BY seq LIMIT %s",
                (after, _EVENTS_PER_FETCH),
            )
            for row in rows:  # one at a time: an unreadable event is named, not its page
                yield _event(row)
            if len(rows) < _EVENTS_PER_FETCH:
                return
            after = int(rows[-1][0])

    def list_events(self, after_seq: int, limit: int) -> list[AuditEvent]:
        rows = self._all(
            f"SELECT {_EVENT} FROM audit_events WHERE seq > %s ORDER BY seq LIMIT %s",
            (after_seq, limit),
        )
        return [_event(row) for row in rows]

    # unauthenticated counts stored by an earlier version (now counted in memory)

    def list_pending_unauthenticated(self) -> list[PendingUnauthenticated]:
        rows = self._all(
            f"SELECT {_PENDING} FROM unauthenticated_pending ORDER BY window_start, source"
        )
        return [
            PendingUnauthenticated(
                source=row[0],
                window_start=_utc(row[1]),
                count=int(row[2]),
                first_rpc=row[3],
                first_request_id=row[4],
                last_at=_utc(row[5]),
            )
            for row in rows
        ]

    def delete_pending_unauthenticated(self, source: str, window_start: dt.datetime) -> None:
        self._run(
            "DELETE FROM unauthenticated_pending WHERE source = %s AND window_start = %s",
            (source, _aware(window_start)),
        )


def _aware(moment: dt.datetime) -> dt.datetime:
    """Refuse naive datetimes, as the SQLite storage's text form does."""
    if moment.tzinfo is None:
        raise ValueError("ledger times must be timezone-aware")
    return moment


def _aware_or_none(moment: dt.datetime | None) -> dt.datetime | None:
    return None if moment is None else _aware(moment)


def _utc(moment: dt.datetime) -> dt.datetime:
    return moment.astimezone(dt.UTC)


def _utc_or_none(moment: dt.datetime | None) -> dt.datetime | None:
    return None if moment is None else _utc(moment)


def _requester(row: tuple[Any, ...]) -> Requester:
    return Requester(
        requester_id=row[0],
        name=row[1],
        organisation=row[2],
        agreement=row[3],
        enabled=bool(row[4]),
        created_at=_utc(row[5]),
    )


def _token(row: tuple[Any, ...]) -> TokenInfo:
    return TokenInfo(
        token_id=row[0],
        requester_id=row[2],
        role=Role(row[3]),
        practice_codes=frozenset(json.loads(row[4])),
        created_at=_utc(row[5]),
        expires_at=_utc_or_none(row[6]),
        revoked_at=_utc_or_none(row[7]),
    )


def _dataset(row: tuple[Any, ...]) -> Dataset:
    return Dataset(
        dataset_id=row[0],
        accounting=Accounting(row[1]),
        cap_units=int(row[2]),
        spent_units=int(row[3]),
        share_releases=bool(row[4]),
    )


def _allocation(row: tuple[Any, ...]) -> Allocation:
    return Allocation(
        requester_id=row[0],
        dataset_id=row[1],
        granted_units=int(row[2]),
        spent_units=int(row[3]),
        expires_at=_utc_or_none(row[4]),
        purpose=row[5],
        agreement=row[6],
    )


def _publish_spend(row: tuple[Any, ...]) -> PublishSpend:
    return PublishSpend(
        spend_id=row[0],
        dataset_id=row[1],
        dataset_version=row[2],
        purpose=row[3],
        cost_units=int(row[4]),
        created_at=_utc(row[5]),
        request_id=row[6],
    )


def _derived(row: tuple[Any, ...]) -> DerivedRecord:
    return DerivedRecord(
        derived_id=row[0],
        requester_id=row[1],
        dataset_id=row[2],
        source_release_id=row[3],
        dataset_version=row[4],
        canonical_query=row[5],
        created_at=_utc(row[6]),
        request_id=row[7],
    )


def _release(row: tuple[Any, ...]) -> StoredRelease:
    return StoredRelease(
        release_id=row[0],
        release_key=row[1],
        dataset_id=row[2],
        requester_id=row[3],
        cost_units=int(row[4]),
        payload=bytes(row[5]),
        created_at=_utc(row[6]),
        request_id=row[7],
        dataset_version=row[8],
    )


def _event(row: tuple[Any, ...]) -> AuditEvent:
    return AuditEvent(
        seq=int(row[0]),
        at=_utc(row[1]),
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

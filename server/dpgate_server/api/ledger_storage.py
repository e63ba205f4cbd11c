"""The ledger storage the settings name: PostgreSQL when `ledger.url` is set, else SQLite.

One place for the server and the offline commands (create-admin-token), so both open the
same ledger the same way, and a ledger that cannot be opened is one line saying why.
The URL's password never appears in a message: `describe_ledger` and the storage's own
errors show the URL without it. The PostgreSQL modules (and psycopg) are imported only
when `ledger.url` is set: a server on an SQLite ledger never loads them.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from dpgate_server.api.startup_checks import StartupError
from dpgate_server.config import Settings
from dpgate_server.ledger import errors as ledger_errors
from dpgate_server.ledger.postgres_urls import redacted_url
from dpgate_server.ledger.sqlite import SqliteStorage
from dpgate_server.ledger.storage import LedgerStorage
from dpgate_server.store.leases import FileReaderLeases, ReaderLeases


def open_reader_leases(settings: Settings, store_root: Path) -> ReaderLeases:
    """Reader leases where every server on the ledger sees them: in the PostgreSQL
    database (replicas may be on several machines), else file locks in the store (an
    SQLite ledger's processes are all on one machine)."""
    if settings.ledger.url is not None:
        from dpgate_server.ledger.reader_leases import PostgresReaderLeases  # noqa: PLC0415

        return PostgresReaderLeases(
            settings.ledger.url.get_secret_value(),
            connect_timeout_s=settings.ledger.connect_timeout_seconds,
        )
    return FileReaderLeases(store_root)


def describe_ledger(settings: Settings) -> str:
    """Where the ledger is, for logs: the SQLite file, or the database URL without password."""
    url = settings.ledger.url
    if url is None:
        return str(settings.storage.ledger_path)
    return redacted_url(url.get_secret_value())


def open_ledger_storage(settings: Settings) -> LedgerStorage:
    """Open (creating and migrating if needed) the configured ledger storage.

    Raises:
        StartupError: the database is unreachable, the file cannot be opened, or the schema
            is newer than this dpgate; one line, without the password.
    """
    if settings.ledger.url is not None:
        from dpgate_server.ledger.postgres import PostgresStorage  # noqa: PLC0415

        options = settings.ledger
        try:
            return PostgresStorage(
                options.url.get_secret_value() if options.url is not None else "",
                busy_timeout_s=options.busy_timeout_seconds,
                connect_timeout_s=options.connect_timeout_seconds,
                max_connections=options.max_connections,
            )
        except ledger_errors.LedgerUnavailable as exc:
            raise StartupError(
                f"{exc}; start PostgreSQL, or correct ledger.url (DPGATE_LEDGER__URL)"
            ) from None
        except (ledger_errors.LedgerSchemaError, ledger_errors.LedgerBusy) as exc:
            raise StartupError(f"cannot open the ledger: {exc}") from None
    path = settings.storage.ledger_path
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return SqliteStorage(path, busy_timeout_s=settings.ledger.busy_timeout_seconds)
    except (
        OSError,
        sqlite3.Error,
        ledger_errors.LedgerSchemaError,
        ledger_errors.LedgerBusy,
    ) as exc:
        raise StartupError(f"cannot open the ledger {path}: {exc}") from None

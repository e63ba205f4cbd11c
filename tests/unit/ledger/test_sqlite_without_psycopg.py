"""A ledger on SQLite never loads psycopg (about 0.2 CPU s of every server's start).

Checked in a fresh interpreter, through the ledger's whole life on a file: open (creating
and migrating), a flight lock, the audit chain's check, close. The PostgreSQL storage is
still one attribute away (`dpgate_server.ledger.PostgresStorage`).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

_OPEN_AND_LIST_MODULES = """
import sys
from pathlib import Path
from dpgate_server.ledger import Ledger
with Ledger.open(Path(sys.argv[1])) as ledger:
    with ledger.single_flight("a-release-key", 1.0) as flight:
        assert flight.held
    assert ledger.verify_recent(10).ok
print("\\n".join(sorted(sys.modules)))
"""


def _modules_after_an_sqlite_ledger(path: Path) -> set[str]:
    command = [sys.executable, "-c", _OPEN_AND_LIST_MODULES, str(path)]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    return set(result.stdout.split())


def test_sqlite_ledger_does_not_import_psycopg(tmp_path: Path) -> None:
    modules = _modules_after_an_sqlite_ledger(tmp_path / "ledger.sqlite")
    assert "dpgate_server.ledger.sqlite" in modules
    assert sorted(m for m in modules if m.partition(".")[0] == "psycopg") == []
    assert "dpgate_server.ledger.postgres" not in modules


def test_postgres_storage_is_still_exported() -> None:
    import dpgate_server.ledger as ledger  # noqa: PLC0415 (the attribute is what is checked)
    from dpgate_server.ledger.postgres import PostgresStorage  # noqa: PLC0415

    assert ledger.PostgresStorage is PostgresStorage

"""What `dpgate-server` loads before it serves: optional parts only when they are used.

Every import of the server's commands is paid by every start (and by each serving process
of a supervisor). The web pages (Starlette, Jinja2, uvicorn) load only when `web.enabled`
(`sidecars.start_web`), psycopg only for a PostgreSQL ledger (an SQLite ledger's whole life
without it: tests/unit/ledger/test_sqlite_without_psycopg.py), and nothing loads
`opendp.prelude`'s extras (scikit-learn, SciPy).
"""

from __future__ import annotations

import subprocess
import sys

NOT_AT_START = ("starlette", "jinja2", "uvicorn", "psycopg", "sklearn", "scipy")

_IMPORT_COMMANDS = (
    "import sys\nimport dpgate_server.commands\nprint('\\n'.join(sorted(sys.modules)))\n"
)


def test_server_commands_load_no_optional_part() -> None:
    result = subprocess.run(
        [sys.executable, "-c", _IMPORT_COMMANDS], capture_output=True, text=True, check=True
    )
    modules = set(result.stdout.split())
    assert {"dpgate_server.api.server", "dpgate_server.sidecars", "grpc"} <= modules
    loaded = sorted(m for m in modules if m.partition(".")[0] in NOT_AT_START)
    assert loaded == []

"""`dpgate`: the command line for analysts, administrators, auditors and providers.

Commands are grouped by the role whose token they need: analyst commands at the top
level (`dpgate query ...`; `dpgate query-set ...` for several at once), then
`dpgate admin ...`, `dpgate audit ...` and `dpgate provider ...`. A group is one module
with its own `typer.Typer`, added below with one `app.add_typer(...)` line; shared
options, output and the connection are in `dpgate.cli._session`. Exit codes are listed
in `dpgate.cli._errors`.
"""

from __future__ import annotations

from dpgate.cli import admin, analyst, audit, provider, query_sets
from dpgate.cli._root import app

app.add_typer(analyst.app)
app.add_typer(query_sets.app, name="query-set")
app.add_typer(admin.app, name="admin")
app.add_typer(audit.app, name="audit")
app.add_typer(provider.app, name="provider")


def main() -> None:
    """Console entry point (`dpgate`)."""
    app(prog_name="dpgate")


__all__ = ["app", "main"]

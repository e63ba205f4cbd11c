"""Provider commands (a provider token): practice data uploads and consent."""

from __future__ import annotations

import typer

app = typer.Typer(help="Practice data uploads and consent (provider token).")

"""Reading a kept signed head from a file or a URL (`audit verify --against-head`)."""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path

import typer

MAX_BYTES = 64 * 1024
"""A signed head is a few hundred bytes; more is not one."""
TIMEOUT_S = 10.0


def read_signed_head(source: str) -> str:
    """The text at `source`: an http(s) URL (e.g. the transparency page's) or a file path.

    Raises:
        typer.BadParameter: unreadable, too large, or not UTF-8.
    """
    try:
        if source.startswith(("http://", "https://")):
            with urllib.request.urlopen(source, timeout=TIMEOUT_S) as response:  # noqa: S310 - scheme checked
                data: bytes = response.read(MAX_BYTES + 1)
        else:
            with Path(source).open("rb") as handle:
                data = handle.read(MAX_BYTES + 1)
    except (OSError, urllib.error.URLError, ValueError) as exc:
        raise typer.BadParameter(
            f"cannot read {source}: {exc}", param_hint="--against-head"
        ) from None
    if len(data) > MAX_BYTES:
        raise typer.BadParameter(
            f"{source} is larger than a signed head", param_hint="--against-head"
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise typer.BadParameter(
            f"{source} is not UTF-8 text", param_hint="--against-head"
        ) from None

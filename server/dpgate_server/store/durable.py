"""Crash-safe file replacement: write aside, fsync, rename over, fsync the folder.

Governance state (staged rows, consent, opt-out keys) is always replaced whole this way,
so a crash (even SIGKILL) leaves either the old file or the new one, never a half file.
Temporary names start with "." and end in ".tmp"; `remove_temporaries` clears those a
killed process left behind (call it while holding the lock of the folder's owner).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path

TEMPORARY_SUFFIX = ".tmp"


def temporary_beside(target: Path) -> Path:
    """A fresh temporary name in `target`'s folder (same filesystem, so rename is atomic)."""
    return target.with_name(f".{target.name}.{secrets.token_hex(6)}{TEMPORARY_SUFFIX}")


def replace_with(
    target: Path,
    write: Callable[[Path], None],
    before_swap: Callable[[], None] | None = None,
) -> None:
    """Write a new `target` through `write(temporary_path)` and swap it in atomically.

    `before_swap` runs once the new file is durable and before it replaces the old one
    (e.g. writing the audit event: if that fails, nothing changes).
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = temporary_beside(target)
    try:
        write(temporary)
        fsync_path(temporary)
        if before_swap is not None:
            before_swap()
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    fsync_path(target.parent)


def replace_text(target: Path, text: str) -> None:
    """Atomically replace `target` with `text` (UTF-8)."""

    def write(path: Path) -> None:
        path.write_text(text, encoding="utf-8")

    replace_with(target, write)


def remove_durably(target: Path) -> bool:
    """Delete `target` if present and make the deletion durable; True if it existed."""
    try:
        target.unlink()
    except FileNotFoundError:
        return False
    fsync_path(target.parent)
    return True


def remove_temporaries(folder: Path) -> int:
    """Delete temporary files a killed writer left in `folder`; returns how many."""
    if not folder.is_dir():
        return 0
    stale = [
        p for p in folder.iterdir() if p.name.startswith(".") and p.name.endswith(TEMPORARY_SUFFIX)
    ]
    for path in stale:
        path.unlink(missing_ok=True)
    return len(stale)


def fsync_path(path: Path) -> None:
    """fsync a file or a folder."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

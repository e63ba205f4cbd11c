"""Crash-safe files: write aside, fsync, rename over, fsync the folder; locks; secrets.

The one place that knows how a file is made durable. Governance state (staged rows,
consent, opt-out keys), the store's CURRENT pointer and signed audit heads are replaced
whole (`replace_with`, `replace_text`), so a crash (even SIGKILL) leaves either the old
file or the new one, never a half file. Temporary names start with "." and end in ".tmp";
`remove_temporaries` clears those a killed process left behind (call it while holding the
lock of the folder's owner). Writers in different processes take `exclusive_lock`; keys
are created once, readable by the owner only, by `create_exclusively`.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

TEMPORARY_SUFFIX = ".tmp"


def temporary_beside(target: Path) -> Path:
    """A fresh temporary name in `target`'s folder (same filesystem, so rename is atomic)."""
    return target.with_name(f".{target.name}.{secrets.token_hex(6)}{TEMPORARY_SUFFIX}")


def replace_with(
    target: Path,
    write: Callable[[Path], object],
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


def write_synced(path: Path, text: str) -> None:
    """Write `text` (UTF-8) to `path` in place and fsync it; for files in a folder that is
    itself renamed into place afterwards (a store version's manifest)."""
    with path.open("w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


def create_exclusively(path: Path, data: bytes, mode: int = 0o600) -> bool:
    """Create `path` holding `data` (fsynced, with `mode`) unless it exists; True if created.

    `O_EXCL` makes creation atomic: of two processes starting together one creates the
    file and the other finds it (and must read it, not write its own).
    """
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        return False
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    fsync_path(path.parent)
    return True


@contextlib.contextmanager
def exclusive_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive `flock` on `path` (created if missing) across processes.

    The lock is released when the block ends or the process dies, so a killed holder never
    leaves it taken.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield

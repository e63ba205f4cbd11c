"""A lock file per port, so a second dpgate-server cannot silently share a port.

With SO_REUSEPORT the kernel lets any process of the same user bind a port that a
reuse-port group already holds, and spreads connections over all of them: a stale or
mistaken second server would quietly serve half the clients. Every server that binds a
fixed port first takes an exclusive `flock` on `dpgate-port-<port>.lock` in the temporary
folder; the kernel drops the lock when the last process holding its file ends, so a
crashed server never leaves a stale lock behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from dpgate_server.api.startup_checks import StartupError


def lock_path(port: int) -> Path:
    """Where the lock of `port` lives (per machine, whatever the host part of the address)."""
    return Path(tempfile.gettempdir()) / f"dpgate-port-{port}.lock"


@dataclass(frozen=True, slots=True)
class PortLock:
    """An exclusive lock on a port, held while `fd` is open (children may inherit it)."""

    port: int
    path: Path
    fd: int

    @classmethod
    def take(cls, address: str) -> PortLock | None:
        """Lock the port of `address`; None for port 0 (a fresh port nobody else binds).

        Raises:
            StartupError: another dpgate-server holds the port (naming its pid), or the
                lock file cannot be opened.
        """
        port = int(address.rpartition(":")[2])
        if port == 0:
            return None
        path = lock_path(port)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise StartupError(
                f"cannot listen on {address}: cannot open the port's lock file {path}"
                f" ({exc.strerror}; another user's server may hold the port)"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise StartupError(
                f"cannot listen on {address}: another dpgate-server{holder} already serves"
                f" port {port} (lock file {path}); stop it or set server.address to another port"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return cls(port, path, fd)

    def release(self) -> None:
        """Drop the lock (children that inherited the file keep it until they end)."""
        with contextlib.suppress(OSError):
            os.close(self.fd)


def _read_holder(fd: int) -> str:
    with contextlib.suppress(OSError, ValueError):
        return f" (pid {int(os.pread(fd, 32, 0).decode().strip())})"
    return ""

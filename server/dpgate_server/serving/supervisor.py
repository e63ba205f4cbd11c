"""The parent of several serving processes on one port: starts, watches and stops them.

Each child is a fresh interpreter (`dpgate-server serve --serving-process I`, by exec, so
no gRPC state is ever forked) that builds its own gRPC server with SO_REUSEPORT on the
port the parent chose and locked; the kernel then spreads incoming connections (not
requests: a channel stays with the process that accepted it) over the children. They
share the ledger and the dataset store exactly as replicas do, so a question is computed
and charged once whichever process it reaches.

- SIGTERM or SIGINT to the parent: every child drains its calls and stops, then the parent.
- A child that ends on its own: the parent stops the others and exits with status 1, for
  the service manager to restart the whole server (a half-sized server that keeps the
  port would hide the fault; a fresh start re-checks the ledger and the audit chain).
- The parent dies (even SIGKILL): each child holds the read end of a pipe the parent
  writes nothing to; end of file there means the parent is gone, and the child stops.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from dpgate_server.api.startup_checks import StartupError, check_address_free
from dpgate_server.serving.port_lock import PortLock

_log = logging.getLogger(__name__)

READY_LINE = "dpgate serving process {index}/{processes} ready (pid {pid})"
"""What a child prints once its server listens; the parent waits for one per child."""
STOP_TIMEOUT_MARGIN_S = 30.0
"""How long past the grace a child may take to stop before it is killed."""
POLL_S = 0.5


@dataclass
class _Child:
    index: int
    process: subprocess.Popen[str]
    ready: threading.Event = field(default_factory=threading.Event)


@dataclass
class Supervisor:
    """Runs `processes` children of `serve_args` on `address`; `run` returns the exit code."""

    address: str
    processes: int
    serve_args: Sequence[str]
    """The parent's own `serve` options (the config file), passed on to every child."""
    grace_seconds: float
    _stop: threading.Event = field(default_factory=threading.Event)

    def reserve(self) -> tuple[PortLock, socket.socket]:
        """Lock the port and hold it with a bound SO_REUSEPORT socket (port 0: a free one).

        Raises:
            StartupError: another server holds the port, or it cannot be bound.
        """
        lock = PortLock.take(self.address)
        host = self.address.rpartition(":")[0]
        port = int(self.address.rpartition(":")[2])
        try:
            check_address_free(self.address)
            family, kind, proto, _, sockaddr = socket.getaddrinfo(
                host.strip("[]"), port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
            )[0]
            holder = socket.socket(family, kind, proto)
            holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            holder.bind(sockaddr)
        except OSError as exc:
            if lock is not None:
                lock.release()
            raise StartupError(f"cannot listen on {self.address}: {exc.strerror}") from None
        except BaseException:
            if lock is not None:
                lock.release()
            raise
        if lock is None:  # port 0: lock the port the kernel chose
            lock = PortLock.take(f"{host}:{holder.getsockname()[1]}")
            assert lock is not None
        return lock, holder

    def run(self) -> int:
        """Start the children, wait for a signal or a child's end, stop them; exit status.

        Raises:
            StartupError: the port is held by another server or cannot be bound.
        """
        lock, holder = self.reserve()
        host = self.address.rpartition(":")[0]
        address = f"{host}:{holder.getsockname()[1]}"
        lifeline_read, lifeline_write = os.pipe()
        children: list[_Child] = []
        previous = {
            s: signal.signal(s, self._request_stop) for s in (signal.SIGTERM, signal.SIGINT)
        }
        try:
            for index in range(self.processes):
                children.append(self._spawn(index, address, lifeline_read, lock.fd))
            os.close(lifeline_read)
            if not self._wait_ready(children):
                return 2 if not self._stop.is_set() else 0
            pids = ", ".join(str(child.process.pid) for child in children)
            print(
                f"dpgate server listening on {address} ({self.processes} processes, pids {pids})",
                flush=True,
            )
            return self._watch(children)
        finally:
            self._stop_all(children)
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            with contextlib.suppress(OSError):
                os.close(lifeline_write)
            holder.close()
            lock.release()

    def _request_stop(self, signum: int, frame: FrameType | None) -> None:
        _log.info("received %s: stopping every serving process", signal.Signals(signum).name)
        self._stop.set()

    def _spawn(self, index: int, address: str, lifeline: int, lock_fd: int) -> _Child:
        command = [
            sys.executable, "-m", "dpgate_server.cli", "serve", *self.serve_args,
            "--serving-process", str(index), "--lifeline-fd", str(lifeline),
        ]  # fmt: skip
        process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "DPGATE_SERVER__ADDRESS": address, "PYTHONUNBUFFERED": "1"},
            pass_fds=(lifeline, lock_fd),  # the lock stays held while any child serves
        )
        child = _Child(index, process)
        threading.Thread(target=_forward, args=(child, self.processes), daemon=True).start()
        return child

    def _wait_ready(self, children: list[_Child]) -> bool:
        """True once every child listens; False if one ended first or a stop was asked."""
        while not self._stop.is_set():
            if all(child.ready.is_set() for child in children):
                return True
            for child in children:
                code = child.process.poll()
                if code is not None and not child.ready.is_set():
                    print(
                        f"dpgate-server: serving process {child.index} exited with status"
                        f" {code} before it was ready (its message is above); stopping",
                        file=sys.stderr,
                        flush=True,
                    )
                    return False
            self._stop.wait(0.1)
        return False

    def _watch(self, children: list[_Child]) -> int:
        while not self._stop.wait(POLL_S):
            for child in children:
                code = child.process.poll()
                if code is not None:
                    print(
                        f"dpgate-server: serving process {child.index} (pid {child.process.pid})"
                        f" exited with status {code}; stopping the others (restart the server)",
                        file=sys.stderr,
                        flush=True,
                    )
                    return 1
        return 0

    def _stop_all(self, children: list[_Child]) -> None:
        """SIGTERM every child still running (each drains its calls), then wait; kill late ones."""
        for child in children:
            if child.process.poll() is None:
                child.process.send_signal(signal.SIGTERM)
        for child in children:
            try:
                child.process.wait(timeout=self.grace_seconds + STOP_TIMEOUT_MARGIN_S)
            except subprocess.TimeoutExpired:
                _log.warning("serving process %d did not stop in time: killed", child.index)
                child.process.kill()
                child.process.wait()
        print("dpgate server stopped", flush=True)


def _forward(child: _Child, processes: int) -> None:
    """Pass a child's output on to the parent's, noting its ready line."""
    ready = READY_LINE.format(index=child.index + 1, processes=processes, pid=child.process.pid)
    stdout = child.process.stdout
    assert stdout is not None
    for line in stdout:
        sys.stdout.write(line)
        sys.stdout.flush()
        if line.strip() == ready:
            child.ready.set()


def watch_lifeline(fd: int) -> None:
    """In a child: stop this process gracefully (SIGTERM to itself) once the parent is gone."""

    def wait() -> None:
        with contextlib.suppress(OSError):
            while os.read(fd, 1):
                pass
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=wait, name="lifeline", daemon=True).start()


def config_args(config: Path | None) -> list[str]:
    """The `serve` options that name the parent's config file, for its children."""
    return [] if config is None else ["--config", str(config.resolve())]

"""N real `dpgate-server serve` processes on one ledger and one dataset store.

Each replica is a process of its own (so it can be SIGKILLed), on a free loopback port,
with its log in a file (a full pipe would block it). Every replica is stopped (SIGTERM,
then SIGKILL) when the block ends, so a failed test leaves no process behind.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

SERVE = [sys.executable, "-m", "dpgate_server.cli", "serve", "--config"]
START_TIMEOUT_S = 120.0
_LISTENING = re.compile(r"listening on 127\.0\.0\.1:(\d+)")


@dataclass(frozen=True)
class Replica:
    """One running server process."""

    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def kill(self) -> None:
        """SIGKILL: no shutdown, no goodbye, as a crashed machine looks to its clients."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        """SIGTERM and wait; SIGKILL if it does not stop in time."""
        if self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.kill()

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def served(self, rpc: str) -> int:
        """How many calls of `rpc` this replica answered OK (from its log)."""
        return self.log_text().count(f"{rpc} OK")


def write_replica_config(folder: Path, store_root: Path, ledger_url: str) -> Path:
    """A config every replica shares: port 0, one worker, the ledger by URL, no demo."""
    config = folder / "replica.toml"
    config.write_text(
        '[server]\naddress = "127.0.0.1:0"\ngrace_seconds = 2\nworkers = 1\n'
        f'[storage]\ndata_dir = "{store_root}"\n'
        f'ledger_path = "{folder / "unused.sqlite"}"\nkey_file = "{folder / "key"}"\n'
        f'[ledger]\nurl = "{ledger_url}"\nconnect_timeout_seconds = 5\n'
        "[demo]\nenabled = false\n"
        "[limits]\nrequests_per_second = 10000\nburst = 10000\n"
        '[operations]\nlog_format = "text"\nhealth_interval_seconds = 0.5\n'
    )
    return config


@contextlib.contextmanager
def running_replicas(
    count: int, store_root: Path, ledger_url: str, folder: Path
) -> Iterator[list[Replica]]:
    """`count` replicas started at once; all stopped when the block ends."""
    config = write_replica_config(folder, store_root, ledger_url)
    started: list[tuple[subprocess.Popen[bytes], Path]] = []
    replicas: list[Replica] = []
    try:
        for index in range(count):
            log = folder / f"replica-{index}.log"
            with log.open("wb") as out:
                process = subprocess.Popen(
                    [*SERVE, str(config)],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env={**os.environ, "PYTHONUNBUFFERED": "1"},
                )
            started.append((process, log))
        replicas = [Replica(p, _wait_for_port(p, log), log) for p, log in started]
        yield replicas
    finally:
        for process, log in started:
            Replica(process, 0, log).stop()


def _wait_for_port(process: subprocess.Popen[bytes], log: Path) -> int:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        match = _LISTENING.search(log.read_text(errors="replace"))
        if match:
            return int(match.group(1))
        if process.poll() is not None:
            raise AssertionError(f"replica exited with {process.returncode}: {log.read_text()}")
        time.sleep(0.1)
    raise AssertionError(f"replica did not start in {START_TIMEOUT_S} s: {log.read_text()}")

"""N real `dpgate-server serve` processes on one ledger and one dataset store.

What replicas share in production is what these share: the ledger (a PostgreSQL URL, or
one SQLite file for several processes on one machine) and the dataset store folder. Each
replica is its own process group on a free loopback port, so a test can SIGKILL one
(`kill`) or stop it gracefully (`stop`) and start it again (`restart`). The ledger is
prepared as an administrator would, on the shared ledger itself.

    with start_replicas(3, ledger_location, store_root, state_dir, dataset_id) as replicas:
        requester_id, token = replicas.new_analyst(epsilon=1)
        Client(replicas.targets[0], token=token) ...

Used by tests/integration/replicas and by the failover tests and bench/replicas.py.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from dpgate_server.ledger.ledger import Ledger
from dpgate_server.ledger.model import RequestInfo
from dpgate_server.spend import to_units_floor
from tests.support import analysts

SERVE = [sys.executable, "-m", "dpgate_server.cli", "serve", "--config"]
SETUP = RequestInfo(request_id="replicas-setup", rpc="test-setup")
DATASET_CAP_EPSILON = 1_000_000
START_TIMEOUT_S = 120.0
_LISTENING = re.compile(r"listening on 127\.0\.0\.1:(\d+)")


@dataclass
class Replica:
    """One running server process of the group."""

    index: int
    config: Path
    process: subprocess.Popen[str]
    port: int
    output: list[str] = field(default_factory=list)
    """Lines the server printed (stdout and stderr), for a failing test's message."""

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def alive(self) -> bool:
        return self.process.poll() is None


@dataclass
class Replicas:
    """Servers sharing one ledger and one store, and the setup tests need on that ledger."""

    ledger_location: str
    """A postgresql:// URL or an SQLite file path (what `Ledger.open` takes)."""
    store_root: Path
    dataset_id: str
    members: list[Replica]
    env: dict[str, str]

    @property
    def targets(self) -> list[str]:
        """host:port of every replica, in order (dead ones included)."""
        return [member.target for member in self.members]

    def ledger(self) -> Ledger:
        """The shared ledger, opened by the test (close it: use `with`)."""
        return Ledger.open(self.ledger_location)

    def new_analyst(self, epsilon: float, prefix: str = "analyst") -> tuple[str, str]:
        """A new analyst holding `epsilon` on the dataset: (requester id, token)."""
        with self.ledger() as ledger:
            return analysts.new_analyst(
                ledger,
                self.dataset_id,
                epsilon,
                prefix=prefix,
                organisation="Replicas",
                request=SETUP,
            )

    def extra_tokens(self, requester_id: str, how_many: int) -> list[str]:
        """More analyst tokens for the same requester (one allocation)."""
        with self.ledger() as ledger:
            return analysts.extra_tokens(ledger, requester_id, how_many, request=SETUP)

    def kill(self, index: int) -> None:
        """SIGKILL replica `index` and its query workers (its whole process group)."""
        _kill_group(self.members[index].process)

    def stop(self, index: int, timeout: float = 60.0) -> int:
        """SIGTERM replica `index` (it drains in-flight calls); its exit code."""
        process = self.members[index].process
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(process)
            raise
        finally:  # its query workers are in its group; none may outlive it
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)

    def restart(self, index: int) -> Replica:
        """Start replica `index` again (same config, so a new free port); the new member."""
        old = self.members[index]
        if old.alive:
            raise RuntimeError(f"replica {index} is still running")
        self.members[index] = _wait_listening(_spawn(old.index, old.config, self.env))
        return self.members[index]

    def close(self) -> None:
        """Stop every replica still running (SIGTERM, then SIGKILL after a while)."""
        for member in self.members:
            if member.alive:
                member.process.send_signal(signal.SIGTERM)
        for member in self.members:
            try:
                member.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                _kill_group(member.process)
            else:  # its query workers are in its group; none may outlive the test
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(member.process.pid, signal.SIGKILL)


def write_replica_config(
    state: Path,
    store_root: Path,
    ledger_location: str,
    *,
    workers: int = 1,
    processes: int = 1,
    extra: str = "",
) -> Path:
    """A config for one replica: port 0, the shared store and ledger, generous rate limits.

    A PostgreSQL URL is not written to the file (it holds a password); `start_replicas`
    passes it as DPGATE_LEDGER__URL. `extra` is appended verbatim (more TOML sections).
    """
    state.mkdir(parents=True, exist_ok=True)
    sqlite_path = state / "unused.sqlite" if _is_url(ledger_location) else Path(ledger_location)
    config = state / "dpgate.toml"
    config.write_text(
        f'[server]\naddress = "127.0.0.1:0"\ngrace_seconds = 1\nworkers = {workers}\n'
        f"rpc_threads = 32\nprocesses = {processes}\n"
        f'[storage]\ndata_dir = "{store_root}"\n'
        f'ledger_path = "{sqlite_path}"\nkey_file = "{state / "key"}"\n'
        "[demo]\nenabled = false\n"
        "[limits]\nrequests_per_second = 100000\nburst = 100000\n"
        "peer_requests_per_second = 100000\npeer_burst = 100000\nmax_queued_queries = 64\n"
        '[operations]\nlog_format = "text"\nlog_level = "WARNING"\n' + extra
    )
    return config


@contextlib.contextmanager
def start_replicas(
    count: int,
    ledger_location: str,
    store_root: Path,
    state: Path,
    dataset_id: str,
    *,
    workers: int = 1,
    processes: int = 1,
    extra_config: str = "",
) -> Iterator[Replicas]:
    """Start `count` servers on `ledger_location` and `store_root`, all at once.

    They start concurrently (as replicas of a deployment do: migrating and registering the
    dataset at the same moment), each with `workers` query workers and its own state folder
    under `state` (and `processes` serving processes on its port: `server.processes`).
    The dataset's cap is then set high enough never to bind. Every replica
    is stopped when the block ends.

    Raises:
        AssertionError: a replica did not start (its output is in the message).
    """
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if _is_url(ledger_location):
        env["DPGATE_LEDGER__URL"] = ledger_location
    configs = [
        write_replica_config(
            state / f"replica-{i}",
            store_root,
            ledger_location,
            workers=workers,
            processes=processes,
            extra=extra_config,
        )
        for i in range(count)
    ]
    spawned = [_spawn(i, config, env) for i, config in enumerate(configs)]
    replicas = Replicas(ledger_location, store_root, dataset_id, [], env)
    try:
        replicas.members = [_wait_listening(member) for member in spawned]
        _cap_dataset(replicas)
        yield replicas
    finally:
        replicas.members = replicas.members or spawned
        replicas.close()


def _cap_dataset(replicas: Replicas) -> None:
    with replicas.ledger() as ledger:
        ledger.admin.set_dataset_cap(
            replicas.dataset_id,
            to_units_floor(DATASET_CAP_EPSILON),
            reason="replica tests",
            request=SETUP,
        )


def _spawn(index: int, config: Path, env: dict[str, str]) -> Replica:
    process = subprocess.Popen(
        [*SERVE, str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        start_new_session=True,
    )
    return Replica(index, config, process, 0)


def _wait_listening(member: Replica) -> Replica:
    """Read the replica's output until it says where it listens; keep draining it after."""
    stdout = member.process.stdout
    assert stdout is not None
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        line = stdout.readline()
        if line:
            member.output.append(line.rstrip())
        match = _LISTENING.search(line)
        if match:
            member.port = int(match.group(1))
            threading.Thread(target=_drain, args=(member,), daemon=True).start()
            return member
        if not line and member.process.poll() is not None:
            break
    _kill_group(member.process)
    raise AssertionError(
        f"replica {member.index} did not start (exit {member.process.poll()}):\n"
        + "\n".join(member.output[-30:])
    )


def _drain(member: Replica) -> None:
    """Keep reading a replica's output so it never blocks on a full pipe."""
    stdout = member.process.stdout
    assert stdout is not None
    for line in stdout:
        if len(member.output) < 10_000:
            member.output.append(line.rstrip())


def _kill_group(process: subprocess.Popen[str]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)


def _is_url(location: str) -> bool:
    return location.startswith(("postgresql://", "postgres://"))

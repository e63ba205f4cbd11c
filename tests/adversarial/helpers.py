"""Servers, requesters and wire helpers shared by the adversarial tests.

Everything here talks to a real server over loopback: in-process servers built with
`build_server` (port 0), or `dpgate-server serve` as a subprocess when a test must
SIGKILL it. Requesters are set up the way an administrator would, on the ledger file.
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import grpc
import polars as pl
from grpc_health.v1 import health_pb2, health_pb2_grpc

from dpgate_server.api.server import RunningServer, build_server
from dpgate_server.config import (
    DemoSettings,
    LimitsSettings,
    ServerSettings,
    Settings,
    StorageSettings,
)
from dpgate_server.ledger.ledger import Ledger
from dpgate_server.ledger.model import RequestInfo, Role
from dpgate_server.spend import to_units_floor
from dpgate_server.store.bounding import verify_bound
from dpgate_server.store.store import DatasetStore, DatasetVersion
from tests.support import analysts

FULL_RUN = os.environ.get("DPGATE_FULL_RUN") == "1"
SETUP = RequestInfo(request_id="adversarial-setup", rpc="test-setup")
DATASET_CAP_EPSILON = 1_000_000
GENEROUS_LIMITS = {
    "requests_per_second": 100_000,
    "burst": 100_000,
    "peer_requests_per_second": 100_000,
    "peer_burst": 100_000,
}
"""Rate limits no attack here reaches, unless a test sets its own."""
"""Large enough never to bind, except where a test lowers it on purpose (collusion)."""


def scale(small: int, full: int) -> int:
    """`small` in the default run, `full` under DPGATE_FULL_RUN=1."""
    return full if FULL_RUN else small


@dataclass(frozen=True)
class Server:
    """A server the tests attack, with what they need to set up and inspect it."""

    target: str
    ledger_path: Path
    store_root: Path
    dataset_id: str
    running: RunningServer | None = None
    """The in-process server (None for a subprocess)."""
    tokens: dict[str, str] = field(default_factory=dict)
    """Role name -> token of the setup requesters ("admin", "auditor", "provider")."""

    def ledger(self) -> Ledger:
        return Ledger.open_sqlite(self.ledger_path)

    def new_analyst(self, epsilon: float, prefix: str = "analyst") -> tuple[str, str]:
        """A new analyst holding `epsilon` on the dataset: (requester id, token)."""
        with self.ledger() as ledger:
            return analysts.new_analyst(
                ledger,
                self.dataset_id,
                epsilon,
                prefix=prefix,
                organisation="Red Team",
                request=SETUP,
            )

    def extra_tokens(self, requester_id: str, how_many: int) -> list[str]:
        """More analyst tokens for the same requester (one allocation)."""
        with self.ledger() as ledger:
            return analysts.extra_tokens(ledger, requester_id, how_many, request=SETUP)

    def spent_units(self, requester_id: str) -> int:
        with self.ledger() as ledger:
            return ledger.get_budget(requester_id, self.dataset_id).spent_units


def settings(
    store_root: Path, state: Path, *, workers: int, address: str = "127.0.0.1:0", **limits: float
) -> Settings:
    """Settings for a test server; generous rate limits unless a test sets its own."""
    return Settings(
        server=ServerSettings(
            address=address,
            rpc_threads=32,
            workers=workers,
            max_message_bytes=int(limits.pop("max_message_bytes", 1024 * 1024)),
        ),
        storage=StorageSettings(
            data_dir=store_root, ledger_path=state / "ledger.sqlite", key_file=state / "key"
        ),
        demo=DemoSettings(enabled=False),
        limits=LimitsSettings(**{**GENEROUS_LIMITS, **limits}),  # type: ignore[arg-type]
    )


def prepare_ledger(ledger_path: Path, dataset_id: str) -> dict[str, str]:
    """Cap the dataset (it exists: the server registered it) and issue setup tokens."""
    with Ledger.open_sqlite(ledger_path) as ledger:
        ledger.admin.set_dataset_cap(
            dataset_id, to_units_floor(DATASET_CAP_EPSILON), reason="red team", request=SETUP
        )
        tokens = {}
        for role in (Role.ADMIN, Role.AUDITOR):
            requester_id = f"setup-{role.value}"
            ledger.admin.create_requester(
                requester_id, name=role.value, organisation="Ops", agreement="-", request=SETUP
            )
            tokens[role.value] = ledger.admin.issue_token(
                requester_id, Role(role), request=SETUP
            ).token
    return tokens


def start_in_process(
    store_root: Path, dataset_id: str, state: Path, *, workers: int, **limits: float
) -> Server:
    """Build and start a server in this process (port 0) and prepare its ledger."""
    state.mkdir(parents=True, exist_ok=True)
    configured = settings(store_root, state, workers=workers, **limits)
    running = build_server(configured)
    tokens = prepare_ledger(configured.storage.ledger_path, dataset_id)
    return Server(
        target=f"127.0.0.1:{running.port}",
        ledger_path=configured.storage.ledger_path,
        store_root=store_root,
        dataset_id=dataset_id,
        running=running,
        tokens=tokens,
    )


def health_status(target: str, timeout: float = 10.0) -> int:
    """The server's overall health status (SERVING is 1); raises grpc.RpcError if down."""
    with grpc.insecure_channel(target) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=timeout
        )
    return int(reply.status)


SERVING = health_pb2.HealthCheckResponse.SERVING


# -- neighbouring datasets ------------------------------------------------------------


@dataclass(frozen=True)
class Neighbour:
    """A copy of a version without one patient's rows, published in its own store."""

    version: DatasetVersion
    target_patient: int
    target_rows: int


def heaviest_patient(version: DatasetVersion) -> tuple[int, int]:
    """A patient with the most rows in `version` (the bound, after publish-time cutting)."""
    counts = (
        version.scan_appointments()
        .group_by("patient_key")
        .len()
        .sort(["len", "patient_key"], descending=[True, False])
        .head(1)
        .collect()
    )
    return int(counts["patient_key"][0]), int(counts["len"][0])


def publish_without_patient(source: DatasetVersion, store_root: Path, patient: int) -> Neighbour:
    """Publish `source` minus `patient`'s rows into `store_root`, with a verified bound.

    The neighbouring dataset of the differencing attack: identical in every row but one
    patient's. Public tables are copied unchanged (they are public, not patient data).
    """
    store = DatasetStore(store_root)
    builder = store.begin_version(source.metadata)
    removed = 0
    for path in source.appointment_paths():
        frame = pl.read_parquet(path)
        kept = frame.filter(pl.col("patient_key") != patient)
        removed += frame.height - kept.height
        kept.write_parquet(builder.appointments_path(path.stem))
    for record in source.manifest.public_files:
        name = Path(record.path).stem
        pl.read_parquet(source.path / record.path).write_parquet(builder.public_table_path(name))
    assert source.manifest.bound is not None
    paths = sorted((builder.staging / "appointments").glob("*.parquet"))
    bound = verify_bound(paths, source.manifest.bound.max_contributions)
    version = store.publish(builder, bound, {"neighbour_of": source.version, "removed": removed})
    return Neighbour(version=version, target_patient=patient, target_rows=removed)


def true_count(version: DatasetVersion) -> int:
    return int(version.scan_appointments().select(pl.len()).collect().item())


# -- `dpgate-server serve` as a subprocess ----------------------------------------------

SERVE = [sys.executable, "-m", "dpgate_server.cli", "serve", "--config"]


def write_config(state: Path, store_root: Path, *, workers: int = 1, port: int = 0) -> Path:
    config = state / "dpgate.toml"
    config.write_text(
        f'[server]\naddress = "127.0.0.1:{port}"\ngrace_seconds = 1\nworkers = {workers}\n'
        f'[storage]\ndata_dir = "{store_root}"\n'
        f'ledger_path = "{state / "ledger.sqlite"}"\nkey_file = "{state / "key"}"\n'
        "[demo]\nenabled = false\n"
        "[limits]\nrequests_per_second = 100000\nburst = 100000\n"
        "peer_requests_per_second = 100000\npeer_burst = 100000\n"
    )
    return config


def start_subprocess(config: Path, timeout: float = 90.0) -> tuple[subprocess.Popen[str], int]:
    """Start `dpgate-server serve` in its own session; (process, port) once it listens."""
    process = subprocess.Popen(
        [*SERVE, str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        start_new_session=True,
    )
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    line = ""
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        match = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
        if match:
            return process, int(match.group(1))
        if not line and process.poll() is not None:
            break
    kill_group(process)
    raise AssertionError(f"server did not start (last line {line!r}, exit {process.poll()})")


class KillableServer(NamedTuple):
    """A server subprocess a SIGKILL test starts from (restarts reuse `config`)."""

    config: Path
    process: subprocess.Popen[str]
    port: int
    server: Server
    tokens: dict[str, str]


def start_killable_server(dataset: DatasetVersion, state: Path) -> KillableServer:
    """`dpgate-server serve` with one worker on `dataset`'s store and a ledger in `state`,
    prepared with an admin cap and the standard tokens (`prepare_ledger`)."""
    store_root = dataset.path.parents[2]
    config = write_config(state, store_root, workers=1)
    process, port = start_subprocess(config)
    server = Server(
        target=f"127.0.0.1:{port}",
        ledger_path=state / "ledger.sqlite",
        store_root=store_root,
        dataset_id=dataset.dataset_id,
    )
    tokens = prepare_ledger(server.ledger_path, server.dataset_id)
    return KillableServer(config, process, port, server, tokens)


def kill_group(process: subprocess.Popen[str]) -> None:
    """SIGKILL a subprocess server's whole session (it and its workers); cleanup only."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)


def wait_for(predicate: object, timeout: float, interval: float = 0.05) -> bool:
    """Poll `predicate()` until true or `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(interval)
    return False


def chunks(items: list[object], size: int) -> Iterator[list[object]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]

"""`dpgate-server serve` as a real process: start, answer, stop on SIGTERM; bad config."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from dpgate import Client, DpgateError, count
from dpgate_server.ledger.ledger import Ledger
from dpgate_server.store.store import DatasetVersion

from .conftest import prepare_ledger

pytestmark = pytest.mark.slow  # long: started first on parallel runs


SERVE = [sys.executable, "-m", "dpgate_server.cli", "serve", "--config"]


def write_config(tmp_path: Path, store_root: Path, address: str = "127.0.0.1:0") -> Path:
    config = tmp_path / "dpgate.toml"
    config.write_text(
        f'[server]\naddress = "{address}"\ngrace_seconds = 2\nworkers = 1\n'
        f'[storage]\ndata_dir = "{store_root}"\n'
        f'ledger_path = "{tmp_path / "ledger.sqlite"}"\nkey_file = "{tmp_path / "key"}"\n'
        "[demo]\nenabled = false\n"
    )
    return config


def start(config: Path) -> tuple[subprocess.Popen[str], int]:
    process = subprocess.Popen(
        [*SERVE, str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    match = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
    assert match, (
        f"unexpected first line {line!r}; stderr: {process.stderr.read() if process.stderr else ''}"
    )
    return process, int(match.group(1))


def test_sigterm_stops_the_server_cleanly(small_dataset: DatasetVersion, tmp_path: Path) -> None:
    process, port = start(write_config(tmp_path, small_dataset.path.parents[2]))
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=10
            )
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        process.send_signal(signal.SIGTERM)
        stdout, _ = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 0
    assert "dpgate server stopped" in stdout


def test_bad_config_is_refused_with_the_key_named(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("[server]\nworkers = -1\n")
    result = subprocess.run([*SERVE, str(config)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "server.workers" in result.stderr
    assert "Traceback" not in result.stderr


def test_plaintext_on_a_public_address_is_refused(
    small_dataset: DatasetVersion, tmp_path: Path
) -> None:
    config = write_config(tmp_path, small_dataset.path.parents[2], address="0.0.0.0:0")
    result = subprocess.run([*SERVE, str(config)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "refusing to serve without TLS" in result.stderr


def test_sigterm_during_queries_leaves_a_consistent_ledger(
    small_dataset: DatasetVersion, tmp_path: Path
) -> None:
    process, port = start(write_config(tmp_path, small_dataset.path.parents[2]))
    seen: list[str] = []
    lock = threading.Lock()
    try:
        codes = small_dataset.metadata.column("practice_code").values or ("A00000",)
        tokens = prepare_ledger(tmp_path / "ledger.sqlite", small_dataset.dataset_id, str(codes[0]))

        def ask(epsilon: float) -> None:
            with Client(f"127.0.0.1:{port}", token=tokens["analyst"], retries=0) as client:
                try:
                    result = client.query(
                        count(small_dataset.dataset_id).by("practice_code").epsilon(epsilon)
                    )
                except DpgateError:
                    return
                with lock:
                    seen.append(result.release_id)

        threads = [threading.Thread(target=ask, args=(0.01 * (i + 1),)) for i in range(12)]
        for thread in threads:
            thread.start()
        time.sleep(1.0)
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=60)
        for thread in threads:
            thread.join(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 0
    with Ledger.open_sqlite(tmp_path / "ledger.sqlite") as ledger:
        assert ledger.reconcile().ok
        assert ledger.verify().ok
        stored = {r.release_id for r in ledger.list_releases()}
    assert set(seen) <= stored

"""The real server on a PostgreSQL ledger: answers and charges; faults at start and while
serving (one line and exit 2 at start; UNAVAILABLE/LEDGER_UNAVAILABLE, nothing charged,
health NOT_SERVING, and service resuming by itself when the database returns)."""

from __future__ import annotations

import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import psycopg
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pydantic import SecretStr
from typer.testing import CliRunner

from dpgate import Client, DpgateError, count
from dpgate_server import commands as server_commands
from dpgate_server.api.server import RunningServer, build_server
from dpgate_server.api.startup_checks import StartupError
from dpgate_server.config import LedgerSettings, OperationsSettings, Settings, WebSettings
from dpgate_server.ledger import Ledger, postgres
from dpgate_server.ledger.local_postgres import LocalPostgres
from dpgate_server.store.store import DatasetVersion

from .conftest import ANALYST_EPSILON, prepare_ledger, settings_for
from .test_serve_process import SERVE, write_config

pytestmark = pytest.mark.slow  # long: started first on parallel runs


HEALTH_INTERVAL_S = 0.2


def _on_postgres(settings: Settings, url: str, *, pages: bool = False) -> Settings:
    return settings.model_copy(
        update={
            "ledger": LedgerSettings(url=SecretStr(url), connect_timeout_seconds=2),
            "operations": OperationsSettings(
                log_format="text",
                health_interval_seconds=HEALTH_INTERVAL_S,
                metrics_enabled=pages,
                metrics_address="127.0.0.1:0",
            ),
            "web": WebSettings(enabled=pages, address="127.0.0.1:0"),
        }
    )


def _start(
    small_dataset: DatasetVersion, tmp_path: Path, url: str, *, pages: bool = False
) -> tuple[RunningServer, str]:
    base = settings_for(small_dataset.path.parents[2], tmp_path, workers=1)
    settings = _on_postgres(base, url, pages=pages)
    running = build_server(settings)
    codes = small_dataset.metadata.column("practice_code").values or ("A00000",)
    tokens = prepare_ledger(url, small_dataset.dataset_id, str(codes[0]))
    return running, tokens["analyst"]


def _health(port: int) -> int:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=5
        )
    return int(reply.status)


def _wait_for_health(port: int, status: int, timeout_s: float = 15) -> None:
    deadline = time.monotonic() + timeout_s
    while _health(port) != status:
        assert time.monotonic() < deadline, f"health never became {status}"
        time.sleep(HEALTH_INTERVAL_S / 2)


def _get(url: str) -> tuple[int, str, str | None]:
    """Status, body and Retry-After of a GET."""
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode(), response.headers["Retry-After"]
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(), error.headers["Retry-After"]


def _dna_by_month(dataset_id: str, epsilon: float):  # type: ignore[no-untyped-def]
    return count(dataset_id).where(status="DNA").by("month").epsilon(epsilon)


@pytest.fixture
def ledger_url(postgres_ledger_databases) -> Iterator[str]:  # type: ignore[no-untyped-def]
    url = postgres_ledger_databases.take()
    yield url
    postgres_ledger_databases.give_back(url)


def test_database_going_away_while_serving_charges_nothing_and_service_resumes(
    small_dataset: DatasetVersion, tmp_path: Path
) -> None:
    cluster = LocalPostgres.start()  # its own cluster: this test stops and restarts it
    try:
        url = cluster.create_database("ledger")
        running, token = _start(small_dataset, tmp_path, url, pages=True)
        web, metrics = running.sidecars.web, running.sidecars.metrics_listener
        assert web is not None
        assert metrics is not None
        metrics_url = f"http://{metrics.address}/metrics"
        try:
            target = f"127.0.0.1:{running.port}"
            with Client(target, token=token, retries=0) as client:
                client.query(_dna_by_month(small_dataset.dataset_id, 0.25))
                _wait_for_health(running.port, health_pb2.HealthCheckResponse.SERVING)

                cluster.stop(mode="immediate")  # as a crash looks to its clients
                for call in (
                    lambda: client.query(_dna_by_month(small_dataset.dataset_id, 0.5)),
                    lambda: client.budget(small_dataset.dataset_id),
                ):
                    with pytest.raises(DpgateError) as refused:
                        call()
                    assert (refused.value.code, refused.value.reason) == (
                        "UNAVAILABLE",
                        "LEDGER_UNAVAILABLE",
                    )
                    assert "nothing was charged" in refused.value.message
                    assert cluster.password not in refused.value.message
                _wait_for_health(running.port, health_pb2.HealthCheckResponse.NOT_SERVING)

                # The public page says the ledger is away (503, retry later), not a crash;
                # the metrics still answer, with the ledger marked down.
                status, body, retry_after = _get(web.url + "/")
                assert (status, retry_after) == (503, "30")
                assert "ledger cannot be reached" in body
                assert cluster.password not in body
                status, body, _ = _get(metrics_url)
                assert status == 200
                assert "dpgate_ledger_up 0.0" in body
                assert "dpgate_workers " in body

                cluster.start_again()
                _wait_for_health(running.port, health_pb2.HealthCheckResponse.SERVING)
                resumed = client.query(_dna_by_month(small_dataset.dataset_id, 0.5))
                assert _get(web.url + "/")[0] == 200
                status, body, _ = _get(metrics_url)
                assert "dpgate_ledger_up 1.0" in body
                assert f'dpgate_releases_total{{dataset="{small_dataset.dataset_id}"}} 2.0' in body
                assert resumed.repeat is False
                assert resumed.remaining == ANALYST_EPSILON - 0.75  # the refused one cost nothing
        finally:
            running.stop(grace_seconds=1)
        with Ledger.open(url) as ledger:
            budget = ledger.get_budget("analyst-1", small_dataset.dataset_id)
            assert budget.spent_units == 750_000_000
            assert len(ledger.list_releases()) == 2
            assert ledger.verify().ok
            assert ledger.reconcile().ok
    finally:
        cluster.destroy()


def test_unreachable_database_at_start_is_one_line_exit_2_without_the_password(
    small_dataset: DatasetVersion, tmp_path: Path, postgres_cluster: LocalPostgres
) -> None:
    config = write_config(tmp_path, small_dataset.path.parents[2])
    closed_port = _closed_port()
    password = "s3cret-" + postgres_cluster.password[:8]
    url = f"postgresql://dpgate:{password}@127.0.0.1:{closed_port}/ledger"
    result = subprocess.run(
        [*SERVE, str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        env={
            **os.environ,
            "DPGATE_LEDGER__URL": url,
            "DPGATE_LEDGER__CONNECT_TIMEOUT_SECONDS": "2",
        },
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("dpgate-server: cannot connect to the ledger database")
    assert f"postgresql://dpgate:***@127.0.0.1:{closed_port}/ledger" in line
    assert "start PostgreSQL, or correct ledger.url" in line
    assert password not in result.stderr + result.stdout


def test_wrong_password_at_start_is_refused_without_echoing_it(
    small_dataset: DatasetVersion, tmp_path: Path, postgres_cluster: LocalPostgres
) -> None:
    settings = settings_for(small_dataset.path.parents[2], tmp_path)
    url = postgres_cluster.url().replace(postgres_cluster.password, "not-the-password")
    with pytest.raises(StartupError) as refused:
        build_server(_on_postgres(settings, url))
    assert "password authentication failed" in str(refused.value)
    assert "not-the-password" not in str(refused.value)


def test_database_from_a_newer_dpgate_is_refused_at_start(
    small_dataset: DatasetVersion, tmp_path: Path, ledger_url: str
) -> None:
    Ledger.open(ledger_url).close()
    _sql(ledger_url, "INSERT INTO schema_version VALUES (999, 'future', now())")
    settings = _on_postgres(settings_for(small_dataset.path.parents[2], tmp_path), ledger_url)
    with pytest.raises(StartupError, match=r"schema version 999.*a newer dpgate has migrated it"):
        build_server(settings)


def test_server_on_postgresql_charges_once_then_migrates_at_start_keeping_the_data(
    small_dataset: DatasetVersion, tmp_path: Path, ledger_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    running, token = _start(small_dataset, tmp_path, ledger_url)
    query = _dna_by_month(small_dataset.dataset_id, 0.5)
    try:
        with Client(f"127.0.0.1:{running.port}", token=token) as client:
            first = client.query(query)
            again = client.query(query)
        assert (first.repeat, again.repeat) == (False, True)
        assert first.remaining == again.remaining == ANALYST_EPSILON - 0.5
        assert again.frame.equals(first.frame)
    finally:
        running.stop(grace_seconds=1)

    # The next dpgate brings one more migration: the server applies it at start.
    latest = postgres.MIGRATIONS[-1][0]
    extra = (latest + 1, "test: a new table", ("CREATE TABLE migrated_marker (x INTEGER)",))
    monkeypatch.setattr(postgres, "MIGRATIONS", (*postgres.MIGRATIONS, extra))
    settings = _on_postgres(settings_for(small_dataset.path.parents[2], tmp_path), ledger_url)
    running = build_server(settings)
    try:
        with Client(f"127.0.0.1:{running.port}", token=token) as client:
            repeat = client.query(query)
        assert (repeat.repeat, repeat.remaining) == (True, ANALYST_EPSILON - 0.5)
        assert repeat.frame.equals(first.frame)
    finally:
        running.stop(grace_seconds=1)
    versions = [v for (v,) in _sql(ledger_url, "SELECT version FROM schema_version ORDER BY 1")]
    assert versions == list(range(1, latest + 2))
    with Ledger.open(ledger_url) as ledger:
        assert ledger.get_budget("analyst-1", small_dataset.dataset_id).spent_units == 500_000_000
        assert ledger.verify().ok
        assert ledger.reconcile().ok
    monkeypatch.undo()  # the previous dpgate now refuses the migrated database
    with pytest.raises(StartupError, match="a newer dpgate has migrated it"):
        build_server(settings)


def _sql(url: str, statement: str) -> list[tuple[object, ...]]:
    with psycopg.connect(url, autocommit=True) as db:
        cursor = db.execute(statement)  # type: ignore[arg-type]
        return cursor.fetchall() if cursor.description else []


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_create_admin_token_works_offline_on_the_postgres_ledger(
    small_dataset: DatasetVersion,
    tmp_path: Path,
    ledger_url: str,
    postgres_cluster: LocalPostgres,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = write_config(tmp_path, small_dataset.path.parents[2])
    monkeypatch.setenv("DPGATE_LEDGER__URL", ledger_url)
    result = CliRunner().invoke(
        server_commands.app, ["create-admin-token", "--config", str(config)]
    )
    assert result.exit_code == 0, result.output
    token = result.stdout.strip()
    assert "postgresql://postgres:***@" in result.stderr
    assert postgres_cluster.password not in result.stderr + result.stdout
    assert not (tmp_path / "ledger.sqlite").exists()  # the file ledger was not touched
    with Ledger.open(ledger_url) as ledger:
        principal = ledger.authenticate(token)
        assert principal is not None
        assert (principal.requester_id, principal.role.value) == ("admin", "admin")

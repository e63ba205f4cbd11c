"""Start-up faults: one clear line on stderr, a non-zero exit, no traceback; a broken audit
chain stops the start unless the operator overrides it, and the override is chained."""

from __future__ import annotations

import logging
import socket
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from dpgate_server import commands as server_cli
from dpgate_server.api.server import BrokenAuditChainError, build_server
from dpgate_server.api.startup_checks import StartupError
from dpgate_server.config import load_settings
from dpgate_server.ledger.ledger import Ledger
from dpgate_server.ledger.model import RequestInfo
from dpgate_server.store.store import DatasetVersion

from .conftest import settings_for
from .test_serve_process import SERVE, write_config
from .test_tls import make_cert


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """`serve` configures the root logger for the process; put pytest's back afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


def serve(config: Path, *extra: str) -> Result:
    return CliRunner().invoke(server_cli.app, ["serve", "--config", str(config), *extra])


def assert_one_line_refusal(result: Result, *expected: str) -> None:
    assert result.exit_code == 2, (result.output, result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("dpgate-server: ")
    for text in expected:
        assert text in lines[0]


def test_port_in_use_is_one_line_from_the_real_process(
    small_dataset: DatasetVersion, tmp_path: Path, taken_port: int
) -> None:
    config = write_config(tmp_path, small_dataset.path.parents[2], f"127.0.0.1:{taken_port}")
    result = subprocess.run([*SERVE, str(config)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert f"cannot listen on 127.0.0.1:{taken_port}: the port is already in use" in line


def test_port_in_use_is_a_startup_error_from_build_server(
    small_dataset: DatasetVersion, tmp_path: Path, taken_port: int
) -> None:
    settings = settings_for(small_dataset.path.parents[2], tmp_path)
    settings = settings.model_copy(
        update={"server": settings.server.model_copy(update={"address": f"127.0.0.1:{taken_port}"})}
    )
    with pytest.raises(StartupError, match="already in use"):
        build_server(settings)


def test_key_not_matching_its_certificate_is_named(
    small_dataset: DatasetVersion, tmp_path: Path
) -> None:
    ours, theirs = (make_cert("localhost", None, server=True) for _ in range(2))
    (tmp_path / "server.crt").write_bytes(ours.cert)
    (tmp_path / "server.key").write_bytes(theirs.key)
    config = write_config(tmp_path, small_dataset.path.parents[2])
    with config.open("a") as file:
        file.write(f'[tls]\ncert_file = "{tmp_path / "server.crt"}"\n')
        file.write(f'key_file = "{tmp_path / "server.key"}"\n')
    assert_one_line_refusal(
        serve(config), "tls.key_file", "is not the private key of tls.cert_file"
    )


def test_missing_key_file_is_named(small_dataset: DatasetVersion, tmp_path: Path) -> None:
    (tmp_path / "server.crt").write_bytes(make_cert("localhost", None, server=True).cert)
    config = write_config(tmp_path, small_dataset.path.parents[2])
    with config.open("a") as file:
        file.write(f'[tls]\ncert_file = "{tmp_path / "server.crt"}"\n')
        file.write(f'key_file = "{tmp_path / "absent.key"}"\n')
    assert_one_line_refusal(serve(config), "cannot read tls.key_file", "absent.key")


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda path: path.mkdir(), "cannot read config file"),
        (lambda path: path.write_bytes(b"\xff\xfe[server]\n"), "is not UTF-8 text"),
        (lambda path: path.write_text("[server\n"), "is not valid TOML"),
    ],
    ids=["a-folder", "not-utf8", "not-toml"],
)
def test_unreadable_config_is_one_line(tmp_path: Path, make, expected: str) -> None:
    config = tmp_path / "server.toml"
    make(config)
    assert_one_line_refusal(serve(config), expected, str(config))


# -- the audit chain at start ---------------------------------------------------------


def record_some_events(ledger_path: Path) -> None:
    with Ledger.open_sqlite(ledger_path) as ledger:
        for name in ("ada", "bo"):
            ledger.admin.create_requester(
                name,
                name=name,
                organisation="Test Trust",
                agreement="DSA-TEST",
                request=RequestInfo(request_id="setup", rpc="setup"),
            )


@pytest.fixture
def broken_chain(small_dataset: DatasetVersion, tmp_path: Path) -> Path:
    """A config whose ledger has its last audit event edited."""
    config = write_config(tmp_path, small_dataset.path.parents[2])
    ledger_path = load_settings(config).storage.ledger_path
    record_some_events(ledger_path)
    with sqlite3.connect(ledger_path) as db:
        db.execute(
            "UPDATE audit_events SET detail = 'edited' "
            "WHERE seq = (SELECT MAX(seq) FROM audit_events)"
        )
    return config


def test_broken_chain_stops_the_start(broken_chain: Path) -> None:
    with pytest.raises(BrokenAuditChainError, match="--accept-broken-audit-chain"):
        build_server(load_settings(broken_chain))
    assert_one_line_refusal(serve(broken_chain), "the audit chain is broken at event", "altered")


def test_override_starts_and_is_recorded_in_the_chain(broken_chain: Path) -> None:
    settings = load_settings(broken_chain)
    with Ledger.open_sqlite(settings.storage.ledger_path) as ledger:
        before = ledger.head().count
    running = build_server(settings, accept_broken_audit_chain=True)
    running.stop(grace_seconds=0)
    with Ledger.open_sqlite(settings.storage.ledger_path) as ledger:
        (event,) = [e for e in ledger.list_events(after_seq=before) if "override" in e.detail]
    assert event.rpc == "server-start"
    assert "--accept-broken-audit-chain" in event.detail
    assert f"broken at event {before}" in event.detail

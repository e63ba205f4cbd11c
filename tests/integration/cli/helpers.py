"""One real server for the CLI tests, bootstrapped the way an operator would.

The first admin token comes from `dpgate-server create-admin-token` run on the ledger
file before the server starts (offline); the other accounts are set up on the ledger,
and every `dpgate` command runs through typer's CliRunner with DPGATE_TARGET and
DPGATE_TOKEN in its environment, as a script would set them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from typer.testing import CliRunner, Result

from dpgate.cli import app
from dpgate_server import commands as server_cli
from dpgate_server.api.server import RunningServer, build_server
from dpgate_server.config import load_settings
from dpgate_server.ledger.ledger import Ledger
from dpgate_server.ledger.model import RequestInfo, Role
from dpgate_server.spend import to_units_floor
from dpgate_server.store.store import DatasetVersion

SETUP = RequestInfo(request_id="cli-test-setup", rpc="cli-test-setup")
ANALYST_EPSILON = 5
POOR_ANALYST_EPSILON = "0.1"
DATASET_CAP_EPSILON = 20


@dataclass(frozen=True)
class CliService:
    """A running server, its config file, and a token per account."""

    running: RunningServer
    target: str
    config: Path
    ledger_path: Path
    dataset_id: str
    practice_code: str
    tokens: dict[str, str]
    """"admin" (from create-admin-token), "analyst", "poor_analyst", "auditor", "provider"."""
    create_admin_token: Result
    """The CliRunner result of the offline create-admin-token run."""


def write_server_config(folder: Path, store_root: Path) -> Path:
    config = folder / "server.toml"
    config.write_text(
        '[server]\naddress = "127.0.0.1:0"\nworkers = 2\ngrace_seconds = 1\n'
        f'[storage]\ndata_dir = "{store_root}"\nledger_path = "{folder / "ledger.sqlite"}"\n'
        f'key_file = "{folder / "key"}"\n'
        "[demo]\nenabled = false\n"
        "[limits]\nrequests_per_second = 10000\nburst = 10000\n"
        "peer_requests_per_second = 100000\npeer_burst = 100000\n"
    )
    return config


def start_cli_service(small_dataset: DatasetVersion, folder: Path) -> CliService:
    config = write_server_config(folder, small_dataset.path.parents[2])
    created = CliRunner().invoke(server_cli.app, ["create-admin-token", "--config", str(config)])
    assert created.exit_code == 0, created.output
    settings = load_settings(config)
    running = build_server(settings)
    codes = small_dataset.metadata.column("practice_code").values or ("A00000",)
    tokens = _prepare_accounts(
        settings.storage.ledger_path, small_dataset.dataset_id, str(codes[0])
    )
    tokens["admin"] = created.stdout.strip()
    return CliService(
        running=running,
        target=f"127.0.0.1:{running.port}",
        config=config,
        ledger_path=settings.storage.ledger_path,
        dataset_id=small_dataset.dataset_id,
        practice_code=str(codes[0]),
        tokens=tokens,
        create_admin_token=created,
    )


def _prepare_accounts(path: Path, dataset_id: str, practice_code: str) -> dict[str, str]:
    with Ledger.open_sqlite(path) as ledger:
        admin = ledger.admin
        admin.set_dataset_cap(
            dataset_id, to_units_floor(DATASET_CAP_EPSILON), reason="cli tests", request=SETUP
        )
        tokens = {}
        accounts = {
            "analyst": Role.ANALYST,
            "poor_analyst": Role.ANALYST,
            "auditor": Role.AUDITOR,
            "provider": Role.PROVIDER,
        }
        for name, role in accounts.items():
            admin.create_requester(
                name, name=name, organisation="Test Trust", agreement="DSA-CLI", request=SETUP
            )
            codes = (practice_code,) if role is Role.PROVIDER else ()
            tokens[name] = admin.issue_token(name, role, request=SETUP, practice_codes=codes).token
        admin.grant_allocation(
            "analyst",
            dataset_id,
            to_units_floor(ANALYST_EPSILON),
            request=SETUP,
            purpose="testing",
            agreement="DSA-TEST",
        )
        admin.grant_allocation(
            "poor_analyst",
            dataset_id,
            to_units_floor(POOR_ANALYST_EPSILON),
            request=SETUP,
            purpose="testing",
            agreement="DSA-TEST",
        )
    return tokens


def dpgate(
    service: CliService, token: str | None, *args: str, env: dict[str, str] | None = None
) -> Result:
    """Run `dpgate ARGS` against the service with `token` in DPGATE_TOKEN (None: no token)."""
    environment: dict[str, str | None] = {
        "DPGATE_TARGET": service.target,
        "DPGATE_TOKEN": token,
        "DPGATE_CONFIG": str(service.config.parent / "no-client-config.toml"),
        "DPGATE_PROFILE": None,
        "COLUMNS": "200",
    }
    environment.update(env or {})
    return CliRunner().invoke(app, list(args), env=environment)


def as_json(result: Result) -> Any:
    """The JSON document a successful `--json` command printed."""
    assert result.exit_code == 0, f"exit {result.exit_code}: {result.output}"
    return json.loads(result.stdout)


def error_of(result: Result) -> dict[str, Any]:
    """The JSON error object a failed `--json` command wrote to stderr."""
    document = json.loads(result.stderr)
    assert isinstance(document, dict)
    error = document["error"]
    assert isinstance(error, dict)
    return error

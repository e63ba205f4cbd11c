"""The CLI line the demo prints on its first start is a command that answers."""

from __future__ import annotations

import shlex
from pathlib import Path
from types import SimpleNamespace

import pytest

from dpgate_server import commands as server_cli
from dpgate_server.ledger.ledger import Ledger
from dpgate_server.store.store import DatasetVersion
from dpgate_server.vocabulary.accounting import Accounting
from tests.integration.cli.helpers import SETUP, CliService, dpgate


def test_demo_prints_a_dpgate_line_that_answers(
    small_dataset: DatasetVersion,
    cli_service: CliService,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    with Ledger.open_sqlite(tmp_path / "demo.sqlite") as ledger:
        ledger.admin.create_dataset(
            small_dataset.dataset_id, accounting=Accounting.PURE_DP, cap_units=0,
            reason="test", request=SETUP,
        )  # fmt: skip
        running = SimpleNamespace(
            store_root=small_dataset.path.parents[2], ledger=ledger, address="127.0.0.1:50051"
        )
        server_cli._announce_demo_accounts(running)  # type: ignore[arg-type]
    printed = capsys.readouterr().out
    line = printed[printed.index("DPGATE_TARGET=") :].split("\n\n")[0].replace("\\\n", " ")
    words = shlex.split(line)
    assert words[0] == "DPGATE_TARGET=127.0.0.1:50051"
    assert words[1].startswith("DPGATE_TOKEN=dpg_")
    assert words[2:5] == [".tools/bin/uv", "run", "dpgate"]
    # The same command, against the test server with its analyst's token.
    result = dpgate(cli_service, cli_service.tokens["analyst"], *words[5:])
    assert result.exit_code == 0, result.output
    assert "remaining epsilon" in result.stdout

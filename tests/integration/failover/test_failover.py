"""Clients given several replicas: calls spread over all, and go on when one is killed.

Real server processes on one PostgreSQL ledger; the real client and CLI. (Several clients
under load while a replica is killed: test_kill_under_load.py.)
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

from typer.testing import CliRunner

from dpgate import AuditClient, Client, count
from dpgate.cli import app
from dpgate_server.ledger import Ledger
from dpgate_server.ledger.model import Role
from dpgate_server.store.store import DatasetVersion
from tests.support.replicas import start_replicas

from .conftest import served, token_for

ANALYST_EPSILON = 5


def _dna_by_month(dataset_id: str, epsilon: str):  # type: ignore[no-untyped-def]
    return count(dataset_id).where(status="DNA").by("month").epsilon(epsilon)


def test_calls_spread_over_replicas_and_go_on_when_one_is_killed(
    small_dataset: DatasetVersion, ledger_url: str, tmp_path: Path
) -> None:
    dataset_id = small_dataset.dataset_id
    first_query = _dna_by_month(dataset_id, "0.25")
    store_root = small_dataset.path.parents[2]
    with start_replicas(2, ledger_url, store_root, tmp_path, dataset_id) as replicas:
        analyst_id, token = replicas.new_analyst(ANALYST_EPSILON)
        doomed, survivor = replicas.members
        both = replicas.targets
        with Client(both, token=token) as client:
            for _ in range(10):
                client.budget(dataset_id)
        assert served(doomed, "GetBudget") > 0
        assert served(survivor, "GetBudget") > 0

        with Client(doomed.target, token=token) as direct:
            first = direct.query(first_query, idempotency_key="key-charged-on-the-doomed-one")
        replicas.kill(0)

        # The same key again (a retry whose first answer was lost): the survivor answers
        # it from the ledger, charging nothing more.
        with Client(",".join(both), token=token) as client:
            again = client.query(first_query, idempotency_key="key-charged-on-the-doomed-one")
            second = client.query(_dna_by_month(dataset_id, "0.5"))
        assert again.release_id == first.release_id
        assert again.frame.equals(first.frame)
        assert second.repeat is False
        assert second.remaining == ANALYST_EPSILON - Decimal("0.75")

        # The command line, given both in DPGATE_TARGET, is answered by the survivor.
        result = CliRunner().invoke(
            app,
            ["query", dataset_id, "--count", "--by", "month", "--epsilon", "1"],
            env={
                "DPGATE_TARGET": ",".join(both),
                "DPGATE_TOKEN": token,
                "DPGATE_CONFIG": str(tmp_path / "no-client-config.toml"),
                "DPGATE_PROFILE": None,
            },
        )
        assert result.exit_code == 0, result.output
        assert served(survivor, "RunQuery") == 3

        _, auditor_token = token_for(replicas, Role.AUDITOR)
        with AuditClient(both, token=auditor_token) as auditor:
            assert auditor.verify().valid
    with Ledger.open(ledger_url) as ledger:
        assert ledger.get_budget(analyst_id, dataset_id).spent_units == 1_750_000_000
        assert len(ledger.list_releases(analyst_id)) == 3

"""Relative accuracy, rho in (epsilon, delta) terms and NHS conventions, end to end.

The real client and CLI against real servers: the session's shared pure-DP server, and a
zCDP one over a copy of the session's small dataset whose policy says zCDP. Everything
checked here is post-processing of what the server sends: no extra charge, and the stored
release is unchanged.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from decimal import Decimal

import polars as pl
import pytest

from dpgate import Client, count, zcdp_epsilon
from dpgate_server.ledger.ledger import Ledger
from dpgate_server.store.store import DatasetStore, DatasetVersion
from tests.integration.cli.helpers import CliService, as_json, dpgate, start_cli_service
from tests.integration.conftest import SharedServer
from tests.support.analysts import new_analyst

from .conftest import SETUP

RELATIVE = ["half_width", "rel_half_width"]


@pytest.fixture(scope="module")
def pure_dp_client(shared_server: SharedServer) -> Iterator[Client]:
    service = shared_server.api
    with Ledger.open_sqlite(service.ledger_path) as ledger:
        _, token = new_analyst(
            ledger, service.dataset_id, 1.0, prefix="plain", organisation="Org", request=SETUP
        )
    with Client(service.target, token=token, timeout=120) as client:
        yield client


@pytest.fixture(scope="module")
def zcdp_service(
    small_dataset: DatasetVersion, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[CliService]:
    """A server over a copy of the small dataset whose policy is zCDP (spend rho)."""
    folder = tmp_path_factory.mktemp("zcdp")
    store_root = folder / "store"
    shutil.copytree(small_dataset.path.parents[2], store_root)
    copied = DatasetStore(store_root).current(small_dataset.dataset_id)
    metadata_file = copied.path / "metadata.json"
    policy = json.loads(metadata_file.read_text())
    policy["accounting"] = "zcdp"
    metadata_file.write_text(json.dumps(policy))
    service = start_cli_service(DatasetStore(store_root).current(small_dataset.dataset_id), folder)
    yield service
    service.running.stop(grace_seconds=1)


@pytest.fixture(scope="module")
def zcdp_client(zcdp_service: CliService) -> Iterator[Client]:
    with Client(zcdp_service.target, token=zcdp_service.tokens["analyst"], timeout=120) as client:
        yield client


def test_answers_carry_relative_half_widths(pure_dp_client: Client) -> None:
    result = pure_dp_client.query(count("gp_appointments").by("month").epsilon(0.05))
    accuracy = result.relative_accuracy()
    assert accuracy.columns == [*result.frame.columns, *RELATIVE]
    assert result.frame.columns == ["month", "value", "ci_low", "ci_high"]  # unchanged
    clear = accuracy.filter(pl.col("ci_low") > 0)
    assert clear.height == accuracy.height  # monthly counts are far from zero
    expected = (clear["ci_high"] - clear["ci_low"]) / 2 / clear["value"]
    assert clear["rel_half_width"].to_list() == pytest.approx(expected.to_list())
    assert 0 < accuracy["rel_half_width"].max() < 0.05  # type: ignore[operator]


def test_answers_relative_to_what_the_planner_expects(pure_dp_client: Client) -> None:
    result = pure_dp_client.query(count("gp_appointments").by("month").epsilon(0.05))
    expected = pl.DataFrame({"month": ["2025-01", "2025-02"], "expected": [40_000, 0]})
    accuracy = result.relative_accuracy(expected).filter(pl.col("month") <= "2025-02")
    half = accuracy["half_width"][0]
    by_month = dict(zip(accuracy["month"], accuracy["rel_half_width_expected"], strict=True))
    assert by_month == {"2024-12": None, "2025-01": pytest.approx(half / 40_000), "2025-02": None}


def test_preview_gives_the_width_relative_to_an_expected_value(pure_dp_client: Client) -> None:
    [before] = pure_dp_client.budget("gp_appointments")
    preview = pure_dp_client.preview(
        count("gp_appointments").by("practice_code", "week").epsilon(0.2), expected=300
    )
    assert preview.expected == 300
    assert preview.rel_half_width_expected == pytest.approx(preview.half_width / 300)
    assert preview.epsilon_equivalent() is None  # pure DP: the spend is an epsilon
    per_cell = preview.relative_to(pl.DataFrame({"practice_code": ["X"], "expected": [150]}))
    assert per_cell["rel_half_width_expected"].to_list() == [
        pytest.approx(preview.half_width / 150)
    ]
    [after] = pure_dp_client.budget("gp_appointments")
    assert after.spent == before.spent


def test_nhs_conventions_leave_the_release_unchanged(pure_dp_client: Client) -> None:
    query = count("gp_appointments").where(status="DNA").by("practice_code").epsilon(0.05)
    first = pure_dp_client.query(query)
    threshold = float(first.frame["value"].median())  # type: ignore[arg-type]
    published = first.nhs_conventions(suppress_below=threshold)
    assert published.columns == ["practice_code", "value", "ci_low", "ci_high", "suppressed"]
    assert published["suppressed"].to_list() == (first.frame["value"] < threshold).to_list()
    shown = published.filter(~pl.col("suppressed"))
    assert all(v % 5 == 0 for v in shown["value"].to_list())
    assert (
        published.filter(pl.col("suppressed"))["value"].null_count()
        == published["suppressed"].sum()
    )
    again = pure_dp_client.query(query)
    assert again.repeat
    assert again.charged == 0
    assert again.frame.equals(first.frame)  # the stored release keeps its unrounded values


def test_zcdp_preview_and_answer_give_rho_with_its_epsilon(zcdp_client: Client) -> None:
    query = count("gp_appointments").by("month").rho(0.5)
    preview = zcdp_client.preview(query)
    assert preview.accounting == "zcdp"
    assert preview.epsilon_equivalent() == pytest.approx(zcdp_epsilon(0.5))
    assert preview.epsilon_equivalent() == pytest.approx(5.2215344445, rel=1e-9)
    result = zcdp_client.query(query)
    assert result.accounting == "zcdp"
    assert result.charged == Decimal("0.5")
    assert result.epsilon_equivalent() == pytest.approx(5.2215344445, rel=1e-9)
    assert result.epsilon_equivalent(1e-9) > result.epsilon_equivalent()  # type: ignore[operator]
    assert set(result.relative_accuracy().columns) >= set(RELATIVE)


def test_cli_query_shows_relative_widths_and_publication_style(
    shared_server: SharedServer,
) -> None:
    service = shared_server.cli
    args = ("query", "gp_appointments", "--by", "month", "--epsilon", "0.06")
    extra = ("--expected", "40000", "--round-to", "5", "--suppress-below", "1000000")
    answer = as_json(dpgate(service, service.tokens["analyst"], *args, *extra, "--json"))
    cell = answer["cells"][0]
    assert cell["rel_half_width"] == pytest.approx(
        (cell["ci_high"] - cell["ci_low"]) / 2 / cell["value"]
    )
    assert cell["rel_half_width_expected"] == pytest.approx(cell["half_width"] / 40000)
    assert "epsilon_equivalent" not in answer  # pure DP: the amounts are epsilons
    published = answer["published_cells"]
    assert all(c["suppressed"] and c["value"] is None for c in published)  # all below 1e6
    hidden = dpgate(service, service.tokens["analyst"], *args, *extra)
    assert hidden.exit_code == 0, hidden.output
    assert "%" not in "".join(line for line in hidden.stdout.splitlines() if "2025-" in line)
    table = dpgate(service, service.tokens["analyst"], *args, "--expected", "40000")
    assert table.exit_code == 0, table.output
    assert "+/- % of value" in table.stdout
    assert "+/- % of expected" in table.stdout
    assert "median interval half-width" in table.stdout
    assert "free: a repeat" in table.stdout


def test_cli_preview_says_the_width_as_a_percentage_of_the_expected_value(
    shared_server: SharedServer,
) -> None:
    service = shared_server.cli
    args = ("preview", "gp_appointments", "--by", "month", "--epsilon", "0.5")
    shown = dpgate(service, service.tokens["analyst"], *args, "--expected", "1000")
    assert shown.exit_code == 0, shown.output
    assert "of the 1,000 you expect a cell to be" in shown.stdout
    document = as_json(dpgate(service, service.tokens["analyst"], *args, "--expected", "1000"
                              , "--json"))  # fmt: skip
    assert document["rel_half_width_expected"] == pytest.approx(document["half_width"] / 1000)


def test_cli_shows_every_rho_with_its_epsilon(zcdp_service: CliService) -> None:
    token = zcdp_service.tokens["analyst"]
    preview = dpgate(zcdp_service, token, "preview", "gp_appointments", "--rho", "0.5")
    assert preview.exit_code == 0, preview.output
    assert "rho 0.5 (epsilon 5.23 at delta 0.000001)" in preview.stdout
    query = dpgate(zcdp_service, token, "query", "gp_appointments", "--by", "weekday",
                   "--rho", "0.125")  # fmt: skip
    assert query.exit_code == 0, query.output
    assert "charged rho 0.125 (epsilon 2.42)" in query.stdout
    assert "delta 0.000001" in query.stdout
    budget = dpgate(zcdp_service, token, "budget")
    assert "(epsilon" in budget.stdout
    assert "rhos add up" in budget.stdout
    document = as_json(dpgate(zcdp_service, token, "budget", "--json"))
    spent = Decimal(document[0]["spent"])
    assert document[0]["spent_epsilon_equivalent"] == pytest.approx(zcdp_epsilon(float(spent)))
    answer = as_json(dpgate(zcdp_service, token, "query", "gp_appointments", "--by", "weekday",
                            "--rho", "0.125", "--json"))  # fmt: skip
    assert answer["epsilon_equivalent"] == pytest.approx(zcdp_epsilon(0.125))
    assert answer["delta"] == 1e-6
    releases = dpgate(zcdp_service, token, "releases")
    assert "0.125 (epsilon 2.42)" in releases.stdout

"""The bias figure through the real server and client: a publish releases it once, charged
to the dataset's cap; an analyst reads it free (DescribeDataset, and beside every answer on
the version), always the same stored figure."""

from __future__ import annotations

from decimal import Decimal

from dpgate import count
from dpgate_server.ledger.ledger import Ledger
from tests.integration.governance.conftest import GovernedService
from tests.unit.governance.helpers import DATASET_ID


def test_an_analyst_reads_the_bias_figure_free_beside_answers(governed: GovernedService) -> None:
    with governed.admin() as admin:
        published = admin.publish_dataset_version(DATASET_ID)
        budget = admin.dataset_budget(DATASET_ID)
        cap_spent = budget.spent
    with governed.analyst() as analyst:
        before = analyst.budget(DATASET_ID)
        description = analyst.describe(DATASET_ID)
        again = analyst.describe(DATASET_ID)
        after = analyst.budget(DATASET_ID)
        answer = analyst.query(count(DATASET_ID).epsilon(0.01), derive="fresh")
    figure = description.bias_figure
    assert figure is not None
    assert figure.released
    assert figure.version == published.version
    (dropped,) = figure.counts  # the governance world bounds the total alone
    assert (dropped.bound, dropped.period, dropped.limit) == ("total_rows", None, 24)
    assert dropped.ci_low < dropped.value < dropped.ci_high
    assert "patients had rows dropped by the 24-row bound" in str(figure)
    assert figure.spend > 0
    assert again.bias_figure == figure  # stored once, never drawn again
    assert after == before  # reading it is free
    # charged once, to the dataset's cap (no allocation pays)
    with Ledger.open_sqlite(governed.ledger_path) as ledger:
        (spend,) = ledger.publish_spends(DATASET_ID, published.version)
    assert spend.cost_units == 50_000_000
    assert cap_spent >= figure.spend
    assert budget.publish_spent == Decimal("0.05")  # the administrator sees what it took
    # beside the answer, the same figure
    assert answer.dataset_version == published.version
    assert answer.bias_figure == figure

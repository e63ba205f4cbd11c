"""The demo's zCDP dataset answers through gRPC beside the pure-DP one, charged what its
verified per-period bounds allow (real server on port 0, real client, demo accounts)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal

import pytest

from dpgate import Client, InvalidQueryError, PeriodCap, count
from dpgate_server.api.server import build_server
from dpgate_server.demo_bootstrap import DEMO_ALSO_ALLOCATION, bootstrap_demo
from dpgate_server.ledger.ledger import Ledger
from dpgate_server.synthetic.generator import ensure_demo_dataset
from dpgate_server.synthetic.gp_metadata import (
    DATASET_ID,
    DEMO_PERIOD_BOUNDS,
    MAX_CONTRIBUTIONS,
    ZCDP_DATASET_ID,
)

from .conftest import settings_for

PRACTICES, SEED = 3, 5


@dataclass(frozen=True)
class Demo:
    target: str
    analyst: str


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    root = tmp_path_factory.mktemp("zcdp_demo")
    store = root / "store"
    for dataset_id in (DATASET_ID, ZCDP_DATASET_ID):
        version = ensure_demo_dataset(store, root / "key", PRACTICES, SEED, dataset_id=dataset_id)
    codes = version.metadata.column("practice_code")
    assert codes is not None
    assert codes.values
    settings = settings_for(store, root)
    running = build_server(settings)
    try:
        with Ledger.open(settings.storage.ledger_path) as ledger:
            accounts = bootstrap_demo(ledger, DATASET_ID, str(codes.values[0]), [ZCDP_DATASET_ID])
        assert accounts is not None
        yield Demo(f"127.0.0.1:{running.port}", accounts.tokens["analyst"])
    finally:
        running.stop(0)


def test_a_practice_by_week_count_is_charged_the_per_period_bound(demo: Demo) -> None:
    with Client(demo.target, token=demo.analyst) as client:
        result = client.query(count(ZCDP_DATASET_ID).by("practice_code", "week").rho("0.05"))
    # l2^2 = min(24^2, 3^2 * 10) = 90: scale sqrt(90 / (2 * 0.05)) = 30 (K alone: 75.9)
    assert result.noise_scale == pytest.approx(30.0, rel=1e-9)
    assert result.mechanism.lower().endswith("gaussian")
    assert result.charged == Decimal("0.05")
    assert result.remaining == DEMO_ALSO_ALLOCATION - Decimal("0.05")
    assert result.frame.height == PRACTICES * 53  # every public practice-week, noised


def test_coarser_or_other_groupings_are_charged_their_own_bounds(demo: Demo) -> None:
    with Client(demo.target, token=demo.analyst) as client:
        by_month = client.preview(count(ZCDP_DATASET_ID).by("practice_code", "month").rho("0.05"))
        total = client.preview(count(ZCDP_DATASET_ID).rho("0.05"))
    # month: min(576, 6^2 * 8) = 288; a total: K^2 = 576
    assert by_month.noise_scale == pytest.approx(math.sqrt(288 / 0.1), rel=1e-9)
    assert total.noise_scale == pytest.approx(math.sqrt(576 / 0.1), rel=1e-9)


def test_the_pure_dp_dataset_answers_beside_it_as_before(demo: Demo) -> None:
    with Client(demo.target, token=demo.analyst) as client:
        result = client.query(count(DATASET_ID).by("practice_code", "week").epsilon("0.5"))
        assert result.noise_scale == pytest.approx(48.0, rel=1e-9)  # K / epsilon
        with pytest.raises(InvalidQueryError):
            client.preview(count(ZCDP_DATASET_ID).epsilon("0.5"))


def test_the_description_shows_the_bounds_costs_are_computed_from(demo: Demo) -> None:
    with Client(demo.target, token=demo.analyst) as client:
        zcdp = client.describe(ZCDP_DATASET_ID).bounds
        pure = client.describe(DATASET_ID).bounds
    assert zcdp is not None
    assert pure is not None
    assert (zcdp.max_contributions, zcdp.verified) == (MAX_CONTRIBUTIONS, True)
    assert zcdp.period_caps == tuple(
        PeriodCap(c.period, c.rows, c.periods, c.practice_periods) for c in DEMO_PERIOD_BOUNDS.caps
    )
    assert zcdp.period_caps[0] == PeriodCap("week", rows=3, periods=10, practice_periods=10)
    assert (pure.max_contributions, pure.verified, pure.period_caps) == (
        MAX_CONTRIBUTIONS,
        True,
        (),
    )

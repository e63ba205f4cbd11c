"""The demo's zCDP twin: the same rows as "gp_appointments", each patient's cut further to the
demo's per-period bounds, verified and recorded, charged in rho."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from dpgate_server.store.bounding import RANDOM_PERIOD_BOUND_METHOD
from dpgate_server.store.period_bounding import bound_maxima, violations
from dpgate_server.store.store import DatasetStore, DatasetVersion
from dpgate_server.synthetic.generator import ensure_demo_dataset
from dpgate_server.synthetic.gp_metadata import (
    DATASET_ID,
    DEMO_PERIOD_BOUNDS,
    MAX_CONTRIBUTIONS,
    ZCDP_DATASET_ID,
)
from dpgate_server.vocabulary.accounting import Accounting

PRACTICES, SEED = 3, 11


def _rows(version: DatasetVersion) -> pl.DataFrame:
    return pl.read_parquet([str(p) for p in version.appointment_paths()])


@pytest.fixture(scope="module")
def twins(tmp_path_factory: pytest.TempPathFactory) -> tuple[DatasetVersion, DatasetVersion]:
    root = tmp_path_factory.mktemp("twins")
    pure = ensure_demo_dataset(root / "store", root / "key", PRACTICES, SEED)
    zcdp = ensure_demo_dataset(
        root / "store", root / "key", PRACTICES, SEED, dataset_id=ZCDP_DATASET_ID
    )
    return pure, zcdp


def test_the_twin_is_a_zcdp_dataset_with_the_demo_bounds(
    twins: tuple[DatasetVersion, DatasetVersion],
) -> None:
    pure, zcdp = twins
    assert (pure.metadata.accounting, zcdp.metadata.accounting) == (
        Accounting.PURE_DP,
        Accounting.ZCDP,
    )
    assert not pure.metadata.period_bounds
    assert zcdp.metadata.period_bounds == DEMO_PERIOD_BOUNDS
    bound = zcdp.manifest.bound
    assert bound is not None
    assert (bound.verified, bound.method, bound.seed) == (True, RANDOM_PERIOD_BOUND_METHOD, SEED)
    assert bound.period_bounds == DEMO_PERIOD_BOUNDS
    assert DatasetStore(zcdp.path.parents[2]).dataset_ids() == [DATASET_ID, ZCDP_DATASET_ID]


def test_the_twins_rows_are_the_pure_rows_cut_to_every_bound(
    twins: tuple[DatasetVersion, DatasetVersion],
) -> None:
    pure, zcdp = twins
    pure_rows, zcdp_rows = _rows(pure), _rows(zcdp)
    assert 0 < zcdp_rows.height < pure_rows.height
    columns = pure_rows.columns
    extra = zcdp_rows.join(pure_rows.unique(), on=columns, how="anti", nulls_equal=True)
    assert extra.height == 0
    maxima = bound_maxima(zcdp.appointment_paths(), DEMO_PERIOD_BOUNDS, 10**9)
    assert not violations(maxima, MAX_CONTRIBUTIONS, DEMO_PERIOD_BOUNDS)
    raw = bound_maxima(pure.appointment_paths(), DEMO_PERIOD_BOUNDS, 10**9)
    assert violations(raw, MAX_CONTRIBUTIONS, DEMO_PERIOD_BOUNDS)  # the cut did something


def test_the_twin_is_reused_and_reproducible(
    twins: tuple[DatasetVersion, DatasetVersion], tmp_path: Path
) -> None:
    _, zcdp = twins
    again = ensure_demo_dataset(
        zcdp.path.parents[2], zcdp.path.parents[3] / "key", PRACTICES, SEED,
        dataset_id=ZCDP_DATASET_ID,
    )  # fmt: skip
    assert again.version == zcdp.version
    fresh = ensure_demo_dataset(
        tmp_path / "store", tmp_path / "key", PRACTICES, SEED, dataset_id=ZCDP_DATASET_ID
    )
    assert fresh.manifest.appointment_files != ()
    # another key gives other patient keys, so compare what does not depend on it
    assert _rows(fresh).height == _rows(zcdp).height

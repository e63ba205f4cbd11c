"""The streaming publish with per-period bounds (issue 18 item 1): every bound enforced in
one pass by the keyed-hash rank, the files verified against them, the manifest recording
them, and a publish reproducible from its seed.

The world is test_streaming_publish's: five practices, SMALL and OTHER upload extracts with
a patient who moved between them (40 rows over nine months), with a memory setting small
enough to split the work into many groups and buckets.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from dpgate_server.governance.optouts import OptOutKind, read_opt_out_numbers
from dpgate_server.governance.staging import StagingArea
from dpgate_server.store.bounding import KEYED_HASH_PERIOD_BOUND_METHOD
from dpgate_server.store.period_bounding import bound_maxima, violations
from dpgate_server.store.period_bounds import PeriodBounds, PeriodCap
from dpgate_server.store.pseudonym import load_or_create_key, patient_key, patient_keys
from dpgate_server.store.store import DatasetStore, DatasetVersion
from tests.unit.governance.helpers import (
    DATASET_ID,
    OPERATOR,
    OTHER,
    SMALL,
    RecordingAudit,
    World,
    copy_world,
    open_governance,
    provider,
    version_rows,
)
from tests.unit.governance.reference_publish import reference_publish, same_rows
from tests.unit.governance.test_streaming_publish import MOVER, SMALL_MEMORY, _extract_with_mover

SEED = 77
BOUNDS = PeriodBounds(
    (
        PeriodCap("week", rows=1, periods=6, practice_periods=5),
        PeriodCap("month", rows=3, periods=4, practice_periods=4),
    )
)


def _publish(world: World, seed: int = SEED, memory: int = SMALL_MEMORY) -> DatasetVersion:
    """Publish with BOUNDS; the opted-out patient keys are left in world.root/opted_out."""
    key = load_or_create_key(world.key_file)
    numbers = read_opt_out_numbers(world.files.national_opt_out)
    keys = pl.DataFrame({"patient_key": patient_keys(key, numbers)})
    keys.write_parquet(world.root / "opted_out.parquet")
    governance = open_governance(
        world,
        RecordingAudit(),
        publish_memory_bytes=memory,
        period_bounds={DATASET_ID: BOUNDS},
    )
    governance.load_opt_out_list(OptOutKind.NATIONAL, world.files.national_opt_out, OPERATOR)
    for practice in (SMALL, OTHER):
        governance.ingest(
            DATASET_ID, practice, _extract_with_mover(world, practice), provider(SMALL, OTHER)
        )
    return governance.publish(DATASET_ID, OPERATOR, seed=seed).version


@pytest.fixture(scope="module")
def world_and_version(
    governance_world: World, tmp_path_factory: pytest.TempPathFactory
) -> tuple[World, DatasetVersion]:
    world = copy_world(governance_world, tmp_path_factory.mktemp("periods") / "world")
    return world, _publish(world)


def test_the_published_files_keep_every_bound(
    world_and_version: tuple[World, DatasetVersion],
) -> None:
    world, version = world_and_version
    base = DatasetStore(world.store_root).open_version(DATASET_ID, "v000001")
    k = version.metadata.max_contributions
    # the base version breaks each of them (so each was enforced, not met by chance)
    assert len(violations(bound_maxima(base.appointment_paths(), BOUNDS, 10**9), k, BOUNDS)) == 6
    maxima = bound_maxima(version.appointment_paths(), BOUNDS, 10**9)
    assert not violations(maxima, k, BOUNDS)
    assert maxima.per_period["week"] == 1
    assert maxima.periods["month"] == 4


def test_the_rows_kept_are_the_reference_cut_by_keyed_rank(
    world_and_version: tuple[World, DatasetVersion],
) -> None:
    world, version = world_and_version
    store = DatasetStore(world.store_root)
    key = load_or_create_key(world.key_file)
    opted_out = pl.read_parquet(world.root / "opted_out.parquet").get_column("patient_key")
    expected = reference_publish(
        store.open_version(DATASET_ID, "v000001"),
        StagingArea(world.governance_root / DATASET_ID),
        pl.read_parquet(version.public_table_path("practices")),
        frozenset(int(k) for k in opted_out.to_list()),
        version.metadata.max_contributions,
        SEED,
        BOUNDS,
    )
    assert same_rows(version_rows(world.store_root), expected)
    mover = version_rows(world.store_root).filter(pl.col("patient_key") == patient_key(key, MOVER))
    assert 0 < mover.height <= 4 * 3


def test_the_manifest_and_metadata_record_the_verified_bounds(
    world_and_version: tuple[World, DatasetVersion],
) -> None:
    _, version = world_and_version
    bound = version.manifest.bound
    assert bound is not None
    assert (bound.verified, bound.method, bound.seed) == (
        True,
        KEYED_HASH_PERIOD_BOUND_METHOD,
        SEED,
    )
    assert bound.period_bounds == BOUNDS == version.metadata.period_bounds
    version.verify_files()


def test_the_same_seed_gives_the_same_files_whatever_the_memory(
    world_and_version: tuple[World, DatasetVersion], governance_world: World, tmp_path: Path
) -> None:
    _, version = world_and_version
    again = _publish(copy_world(governance_world, tmp_path / "again"), memory=4 * 1024**3)
    digests = [f.sha256 for f in again.manifest.appointment_files]
    assert digests == [f.sha256 for f in version.manifest.appointment_files]


def test_a_dataset_without_period_bounds_publishes_as_before(world: World) -> None:
    version = open_governance(world, RecordingAudit()).publish(DATASET_ID, OPERATOR).version
    assert version.manifest.bound is not None
    assert not version.manifest.bound.period_bounds
    assert not version.metadata.period_bounds
    assert "period_bounds" not in (version.path / "metadata.json").read_text()

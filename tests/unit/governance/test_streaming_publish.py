"""The streaming publish, with a memory setting small enough to split the work many ways,
against the plain in-memory reference (reference_publish.py).

The world: five practices. SMALL and OTHER upload their real extracts plus rows of one
patient who moved between them (20 + 20 rows, over the bound of 24 in total); UNUSED and
F81143 are carried forward; F81147 withdraws; both opt-out lists are loaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from dpgate_server.governance.consent import ConsentState
from dpgate_server.governance.errors import GovernanceError
from dpgate_server.governance.optouts import OptOutKind, read_opt_out_numbers
from dpgate_server.governance.publish_plan import plan_publish
from dpgate_server.governance.publish_progress import PublishProgress, PublishStage
from dpgate_server.governance.publishing import PublishResult
from dpgate_server.governance.staging import StagingArea
from dpgate_server.store.bounding import KEYED_HASH_BOUND_METHOD, max_rows_per_patient
from dpgate_server.store.pseudonym import load_or_create_key, patient_key, patient_keys
from dpgate_server.store.store import DatasetStore
from tests.unit.governance.helpers import (
    DATASET_ID,
    OPERATOR,
    OTHER,
    SMALL,
    UNUSED,
    RecordingAudit,
    World,
    copy_world,
    csv_bytes,
    good_row,
    open_governance,
    provider,
    valid_numbers,
    version_rows,
)
from tests.unit.governance.reference_publish import reference_publish, same_rows

SMALL_MEMORY = 8 * 1024 * 1024
"""Bytes: a group of about 20k rows, buckets of about 87k rows (the world has ~190k)."""
SEED = 20_251_204
WITHDRAWN = "F81147"
MOVER = valid_numbers(1, start=99)[0]
"""The patient with rows at both SMALL and OTHER."""


@dataclass(frozen=True)
class Published:
    world: World
    result: PublishResult
    opted_out_keys: frozenset[int]
    progress: tuple[PublishProgress, ...]

    @property
    def rows(self) -> pl.DataFrame:
        return version_rows(self.world.store_root)

    @property
    def key(self) -> bytes:
        return load_or_create_key(self.world.key_file)


def _extract_with_mover(world: World, practice: str) -> bytes:
    extract = world.extract(practice)
    header = extract.split(b"\n", 1)[0].decode().split(",")
    rows = [
        good_row(
            practice_code=practice,
            nhs_number=MOVER,
            appointment_id=str(900_000 + i),
            duration_minutes=str(1 + i),
            appointment_datetime=f"2025-0{1 + i % 9}-1{i % 10} 1{i % 8}:30",
            booked_datetime=f"2025-0{1 + i % 9}-01 08:00",
        )
        for i in range(20)
    ]
    return extract + csv_bytes(rows, columns=header).split(b"\n", 1)[1]


def _publish_world(world: World, memory_bytes: int = SMALL_MEMORY) -> Published:
    governance = open_governance(world, RecordingAudit(), publish_memory_bytes=memory_bytes)
    key = load_or_create_key(world.key_file)
    numbers = read_opt_out_numbers(world.files.national_opt_out) + read_opt_out_numbers(
        world.files.type1_opt_out
    )
    governance.load_opt_out_list(OptOutKind.NATIONAL, world.files.national_opt_out, OPERATOR)
    governance.load_opt_out_list(OptOutKind.TYPE1, world.files.type1_opt_out, OPERATOR)
    for practice in (SMALL, OTHER):
        data = _extract_with_mover(world, practice)
        governance.ingest(DATASET_ID, practice, data, provider(SMALL, OTHER))
    governance.set_consent(DATASET_ID, WITHDRAWN, ConsentState.WITHDRAWN, OPERATOR)
    progress: list[PublishProgress] = []
    result = governance.publish(DATASET_ID, OPERATOR, progress=progress.append, seed=SEED)
    opted_out = frozenset(int(k) for k in patient_keys(key, numbers).tolist())
    return Published(world, result, opted_out, tuple(progress))


@pytest.fixture(scope="module")
def published(governance_world: World, tmp_path_factory: pytest.TempPathFactory) -> Published:
    world = copy_world(governance_world, tmp_path_factory.mktemp("streaming") / "world")
    return _publish_world(world)


def test_the_small_memory_setting_splits_the_work(published: Published) -> None:
    base = DatasetStore(published.world.store_root).open_version(DATASET_ID, "v000001")
    counts = base.scan_appointments().group_by("practice_code").len().collect()
    rows = {str(code): int(n) for code, n in counts.iter_rows()}
    plan = plan_publish(rows, SMALL_MEMORY)
    assert len(plan.groups) >= 4
    assert plan.buckets >= 2
    assert plan.verify_rows_per_pass < sum(rows.values())


def test_streaming_publish_keeps_exactly_the_reference_rows(published: Published) -> None:
    store = DatasetStore(published.world.store_root)
    version = published.result.version
    expected = reference_publish(
        store.open_version(DATASET_ID, "v000001"),
        StagingArea(published.world.governance_root / DATASET_ID),
        pl.read_parquet(version.public_table_path("practices")),
        published.opted_out_keys,
        version.metadata.max_contributions,
        SEED,
    )
    assert same_rows(published.rows, expected)


def test_a_patient_split_across_two_practices_is_bounded_across_both(
    published: Published,
) -> None:
    mover = published.rows.filter(pl.col("patient_key") == patient_key(published.key, MOVER))
    assert mover.height == 24
    assert set(mover.get_column("practice_code").to_list()) == {SMALL, OTHER}
    assert max_rows_per_patient(published.result.version.appointment_paths()) <= 24


def test_opted_out_patients_and_the_withdrawn_practice_are_left_out(published: Published) -> None:
    rows = published.rows
    assert published.opted_out_keys
    assert not rows.filter(pl.col("patient_key").is_in(sorted(published.opted_out_keys))).height
    assert WITHDRAWN not in rows.get_column("practice_code").unique().to_list()
    assert UNUSED in rows.get_column("practice_code").unique().to_list()


def test_manifest_records_the_verified_keyed_bound_and_its_seed(published: Published) -> None:
    bound = published.result.version.manifest.bound
    assert bound is not None
    assert (bound.method, bound.seed, bound.verified) == (KEYED_HASH_BOUND_METHOD, SEED, True)
    published.result.version.verify_files()


def test_month_files_are_sorted_by_practice(published: Published) -> None:
    for path in published.result.version.appointment_paths():
        codes = pl.read_parquet(path, columns=["practice_code"]).get_column("practice_code")
        assert codes.is_sorted()


def test_progress_reports_every_stage_in_order_and_no_row_counts(published: Published) -> None:
    stages = [p.stage for p in published.progress]
    assert list(dict.fromkeys(stages)) == list(PublishStage)
    fractions = [p.fraction for p in published.progress]
    assert fractions == sorted(fractions)
    assert fractions[-1] == 1.0
    assert {p.unit for p in published.progress} == {"practices", "buckets", "checks"}
    writing = [p for p in published.progress if p.stage is PublishStage.WRITING]
    assert writing[-1].done == writing[-1].total == 4  # practices: five declared, one withdrawn


def test_the_same_seed_gives_the_same_files_whatever_the_memory_setting(
    published: Published, governance_world: World, tmp_path: Path
) -> None:
    world = copy_world(governance_world, tmp_path / "world")
    again = _publish_world(world, memory_bytes=4 * 1024**3)  # one group, one bucket
    assert same_rows(again.rows, published.rows)
    digests = [f.sha256 for f in again.result.version.manifest.appointment_files]
    assert digests == [f.sha256 for f in published.result.version.manifest.appointment_files]


def test_another_seed_keeps_other_rows_for_patients_over_the_bound(
    published: Published, tmp_path: Path
) -> None:
    world = copy_world(published.world, tmp_path / "other-seed")
    governance = open_governance(world, RecordingAudit(), publish_memory_bytes=SMALL_MEMORY)
    governance.publish(DATASET_ID, OPERATOR, seed=SEED + 1)
    key = patient_key(published.key, MOVER)
    first = published.rows.filter(pl.col("patient_key") == key)
    second = version_rows(world.store_root).filter(pl.col("patient_key") == key)
    assert second.height == 24
    assert not same_rows(first, second)


def test_kept_rows_do_not_favour_early_months(published: Published) -> None:
    """A patient over the bound keeps rows spread like all of their rows, not the first."""
    store = DatasetStore(published.world.store_root)
    base = store.open_version(DATASET_ID, "v000001").scan_appointments()
    heavy = base.group_by("patient_key").len().filter(pl.col("len") >= 20).select("patient_key")
    before = base.join(heavy, on="patient_key").select("month").collect()
    after = published.rows.lazy().join(heavy, on="patient_key").select("month").collect()
    months = sorted(before.get_column("month").unique().to_list())
    share_before = np.array([(before["month"] == m).mean() for m in months])
    share_after = np.array([(after["month"] == m).mean() for m in months])
    assert after.height < before.height
    assert np.abs(share_after - share_before).max() < 0.03


# bad input and concurrency


def test_a_second_publish_while_one_runs_is_refused(world: World) -> None:
    governance = open_governance(world, RecordingAudit(), publish_memory_bytes=SMALL_MEMORY)
    refusals: list[GovernanceError] = []

    def publish_again(progress: PublishProgress) -> None:
        if progress.stage is PublishStage.BOUNDING and not refusals:
            with pytest.raises(GovernanceError) as caught:
                open_governance(world, RecordingAudit()).publish(DATASET_ID, OPERATOR)
            refusals.append(caught.value)

    result = governance.publish(DATASET_ID, OPERATOR, progress=publish_again)
    assert refusals[0].reason == "PUBLISH_IN_PROGRESS"
    assert "being published" in refusals[0].message
    assert result.version.version == "v000002"
    assert DatasetStore(world.store_root).versions(DATASET_ID) == ["v000001", "v000002"]


def test_an_upload_during_a_publish_waits_for_the_next_one(world: World) -> None:
    governance = open_governance(world, RecordingAudit(), publish_memory_bytes=SMALL_MEMORY)
    governance.ingest(DATASET_ID, SMALL, csv_bytes([good_row()]), provider(SMALL))

    def upload(progress: PublishProgress) -> None:
        if progress.stage is PublishStage.READING and progress.done == 0:
            governance.ingest(DATASET_ID, SMALL, world.extract(SMALL), provider(SMALL))

    governance.publish(DATASET_ID, OPERATOR, progress=upload)
    assert version_rows(world.store_root).filter(pl.col("practice_code") == SMALL).height == 1
    governance.publish(DATASET_ID, OPERATOR)
    assert version_rows(world.store_root).filter(pl.col("practice_code") == SMALL).height > 1


def test_a_withdrawal_during_a_publish_stops_it(world: World) -> None:
    governance = open_governance(world, RecordingAudit(), publish_memory_bytes=SMALL_MEMORY)

    def withdraw(progress: PublishProgress) -> None:
        if progress.stage is PublishStage.VERIFYING and progress.done == 0:
            governance.set_consent(DATASET_ID, UNUSED, ConsentState.WITHDRAWN, OPERATOR)

    with pytest.raises(GovernanceError) as caught:
        governance.publish(DATASET_ID, OPERATOR, progress=withdraw)
    assert caught.value.reason == "CONSENT_CHANGED"
    assert UNUSED in caught.value.message
    store = DatasetStore(world.store_root)
    assert store.versions(DATASET_ID) == ["v000001"]
    assert not any((world.store_root / DATASET_ID / "staging").iterdir())
    version = governance.publish(DATASET_ID, OPERATOR).version
    assert UNUSED not in version_rows(world.store_root).get_column("practice_code").to_list()
    assert version.version == "v000002"


def test_files_of_a_failed_publish_are_removed(world: World) -> None:
    governance = open_governance(world, RecordingAudit(), publish_memory_bytes=SMALL_MEMORY)

    def fail(progress: PublishProgress) -> None:
        if progress.stage is PublishStage.WRITING and progress.done == 2:
            raise RuntimeError("stop here")

    with pytest.raises(RuntimeError, match="stop here"):
        governance.publish(DATASET_ID, OPERATOR, progress=fail)
    folder = world.store_root / DATASET_ID
    assert not any((folder / "staging").iterdir())
    assert DatasetStore(world.store_root).versions(DATASET_ID) == ["v000001"]

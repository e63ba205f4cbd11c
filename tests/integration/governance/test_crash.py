"""SIGKILL in the middle of a publish or an upload leaves the previous state usable."""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest

from dpgate_server.governance.publish_progress import PublishStage
from dpgate_server.governance.staging import StagingArea
from dpgate_server.queries import engine
from dpgate_server.queries.model import Aggregate, Query, Spend
from dpgate_server.store.bounding import max_rows_per_patient
from dpgate_server.store.leases import FileReaderLeases
from dpgate_server.store.retention import tidy_store
from dpgate_server.store.store import DatasetStore
from tests.unit.governance.helpers import (
    DATASET_ID,
    OPERATOR,
    SMALL,
    RecordingAudit,
    World,
    copy_world,
    open_governance,
    provider,
)

pytestmark = pytest.mark.slow  # long: started first on parallel runs


CHILD = Path(__file__).with_name("crash_child.py")


def start_child(world: World, operation: str) -> subprocess.Popen[str]:
    child = subprocess.Popen(
        [sys.executable, str(CHILD), str(world.root), operation],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    assert child.stdin is not None
    assert child.stdout.readline().strip() == "ready"
    child.stdin.write("go\n")
    child.stdin.flush()
    return child


def kill(child: subprocess.Popen[str]) -> None:
    try:
        assert child.poll() is None, "the child stopped by itself"
        child.send_signal(signal.SIGKILL)
    finally:
        child.wait(timeout=30)
        assert child.returncode == -signal.SIGKILL


def run_and_kill(world: World, operation: str, delay_s: float) -> None:
    child = start_child(world, operation)
    time.sleep(delay_s)
    kill(child)


def kill_publish_at(world: World, stage: PublishStage) -> None:
    """SIGKILL a publishing child as soon as it reports starting `stage`."""
    child = start_child(world, "publish")
    assert child.stdout is not None
    try:
        for line in child.stdout:
            if line.strip() == f"stage {stage.value}":
                break
    finally:
        kill(child)


def assert_current_version_is_whole(world: World) -> None:
    version = DatasetStore(world.store_root).current(DATASET_ID)
    version.verify_files()
    assert version.manifest.bound is not None
    assert version.manifest.bound.verified
    assert max_rows_per_patient(version.appointment_paths()) <= 24


@pytest.fixture
def crash_world(governance_source: World, tmp_path: Path) -> World:
    return copy_world(governance_source, tmp_path / "world")


@pytest.mark.parametrize("stage", list(PublishStage), ids=[s.value for s in PublishStage])
def test_sigkill_during_publish_leaves_nothing_visible_after_the_next_start(
    crash_world: World, stage: PublishStage, caplog: pytest.LogCaptureFixture
) -> None:
    governance = open_governance(crash_world, RecordingAudit())
    governance.ingest(DATASET_ID, SMALL, crash_world.extract(SMALL), provider(SMALL))
    store = DatasetStore(crash_world.store_root)
    kill_publish_at(crash_world, stage)
    assert store.current_name(DATASET_ID) == "v000001"
    assert_current_version_is_whole(crash_world)
    assert any((crash_world.store_root / DATASET_ID / "staging").iterdir())  # half built
    with caplog.at_level(logging.WARNING):
        tidy_store(store, FileReaderLeases(store.root), keep=2)  # what a server start does
    assert "unfinished build" in caplog.text
    assert not any((crash_world.store_root / DATASET_ID / "staging").iterdir())
    assert store.versions(DATASET_ID) == ["v000001"]
    after = governance.publish(DATASET_ID, OPERATOR).version  # the lock died with the child
    assert after.version == "v000002"
    query = Query(DATASET_ID, Aggregate.count(), spend=Spend.epsilon(1))
    assert engine.run(after, query).cells[0].value > 100_000


def test_sigkill_during_upload_leaves_one_whole_staged_extract(crash_world: World) -> None:
    full = crash_world.extract(SMALL).count(b"\n") - 1
    governance = open_governance(crash_world, RecordingAudit())
    governance.ingest(DATASET_ID, SMALL, crash_world.extract(SMALL), provider(SMALL))
    staging = StagingArea(crash_world.governance_root / DATASET_ID)
    for delay in (0.15, 0.45):
        run_and_kill(crash_world, "ingest", delay)
        record = staging.record(SMALL)
        assert record is not None
        rows = pl.read_parquet(staging.path(SMALL))
        assert rows.height == record.rows_staged
        assert rows.height in (1, full)  # the previous extract or the next, never a mix
    governance.ingest(DATASET_ID, SMALL, crash_world.extract(SMALL), provider(SMALL))
    assert not [p for p in staging.folder.iterdir() if p.name.endswith(".tmp")]

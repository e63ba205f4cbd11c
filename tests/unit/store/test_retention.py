"""Versions kept, versions deleted, and what killed work leaves behind (store, leases)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import polars as pl
import pytest

from dpgate_server.store import store as store_module
from dpgate_server.store.leases import FileReaderLeases, reading_current
from dpgate_server.store.retention import retire_old_versions
from dpgate_server.store.store import BuildInProgressError, DatasetStore
from dpgate_server.vocabulary.errors import DatasetNotFoundError
from tests.unit.queries.conftest import tiny_metadata

DATASET = "tiny"


def _publish(store: DatasetStore) -> str:
    builder = store.begin_version(tiny_metadata(DATASET))
    _write_rows(builder.appointments_path("2025-01"))
    return store.publish(builder, None, {}).version


def _write_rows(path: Path) -> None:
    pl.DataFrame({"patient_key": [1, 2]}).write_parquet(path)


@pytest.fixture
def store(tmp_path: Path) -> DatasetStore:
    return DatasetStore(tmp_path / "store")


def test_the_newest_versions_are_kept_and_older_ones_deleted(store: DatasetStore) -> None:
    for _ in range(4):
        _publish(store)
    swept = retire_old_versions(store, FileReaderLeases(store.root), DATASET, keep=2)
    assert swept.deleted == ("v000001", "v000002")
    assert store.versions(DATASET) == ["v000003", "v000004"]
    assert store.current_name(DATASET) == "v000004"


def test_a_version_being_read_is_kept_until_its_reader_is_done(store: DatasetStore) -> None:
    leases = FileReaderLeases(store.root)
    _publish(store)
    with reading_current(store, leases, DATASET) as version:
        _publish(store)
        swept = retire_old_versions(store, leases, DATASET, keep=1)
        assert (swept.deleted, swept.in_use) == ((), ("v000001",))
        version.verify_files()  # still all there
    assert retire_old_versions(store, leases, DATASET, keep=1).deleted == ("v000001",)


def test_a_lease_in_another_process_protects_the_version(store: DatasetStore) -> None:
    leases = FileReaderLeases(store.root)
    _publish(store)
    script = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        from dpgate_server.store.leases import FileReaderLeases
        with FileReaderLeases(Path({str(store.root)!r})).hold({DATASET!r}, "v000001"):
            print("holding", flush=True)
            sys.stdin.readline()
        """
    )
    reader = subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert reader.stdout is not None
    assert reader.stdin is not None
    try:
        assert reader.stdout.readline().strip() == "holding"
        _publish(store)
        assert retire_old_versions(store, leases, DATASET, keep=1).in_use == ("v000001",)
    finally:
        reader.stdin.write("done\n")
        reader.stdin.close()
        reader.wait(timeout=30)
    assert retire_old_versions(store, leases, DATASET, keep=1).deleted == ("v000001",)


def test_a_reader_never_opens_a_retired_version(store: DatasetStore) -> None:
    leases = FileReaderLeases(store.root)
    _publish(store)
    _publish(store)
    with leases.retire(DATASET, "v000001") as free:
        assert free
        store.remove_version(DATASET, "v000001")
    with reading_current(store, leases, DATASET) as version:
        assert version.version == "v000002"
    with pytest.raises(DatasetNotFoundError):
        store.open_version(DATASET, "v000001")


def test_the_current_version_is_never_removed(store: DatasetStore) -> None:
    _publish(store)
    with pytest.raises(ValueError, match="current"):
        store.remove_version(DATASET, "v000001")
    assert retire_old_versions(store, FileReaderLeases(store.root), DATASET, keep=1).deleted == ()


def test_recovery_removes_what_killed_work_left(store: DatasetStore) -> None:
    _publish(store)
    dataset = store.root / DATASET
    (dataset / "staging" / "dead-build" / "work").mkdir(parents=True)
    shutil.copytree(dataset / "versions" / "v000001", dataset / "versions" / "v000002")
    (dataset / "trash" / "v000000-dead").mkdir(parents=True)
    recovery = store.recover(DATASET)
    assert (recovery.unfinished_builds, recovery.unpublished_versions) == (1, ("v000002",))
    assert recovery.interrupted_deletions == 1
    assert store.versions(DATASET) == ["v000001"]
    assert not any((dataset / "staging").iterdir())
    assert not any((dataset / "trash").iterdir())
    assert store.current(DATASET).version == "v000001"


def test_recovery_leaves_a_running_build_alone(store: DatasetStore) -> None:
    _publish(store)
    with store.building(DATASET):
        builder = store.begin_version(tiny_metadata(DATASET))
        assert store.recover(DATASET).busy
        assert builder.staging.is_dir()
        with pytest.raises(BuildInProgressError), store.building(DATASET):
            pass
        builder.discard()


def test_a_failed_pointer_swap_leaves_no_sealed_folder(
    store: DatasetStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    _publish(store)
    builder = store.begin_version(tiny_metadata(DATASET))
    _write_rows(builder.appointments_path("2025-01"))

    def full_disk(path: Path, text: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(store_module, "replace_text", full_disk)
    with pytest.raises(OSError, match="No space left"):
        store.publish(builder, None, {})
    assert store.versions(DATASET) == ["v000001"]
    assert store.current_name(DATASET) == "v000001"


def test_names_before_a_version_include_retired_ones(store: DatasetStore) -> None:
    for _ in range(3):
        _publish(store)
    retire_old_versions(store, FileReaderLeases(store.root), DATASET, keep=1)
    assert store.versions(DATASET) == ["v000003"]
    assert store.names_before(store.current_name(DATASET)) == ["v000001", "v000002"]
    assert store.names_before("v000001") == []
    assert store.names_before("not-numbered") == []

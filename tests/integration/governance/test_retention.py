"""Version retention through the real server: old versions go once nobody reads them, and
releases made on them stay listed and free to repeat (answered from the ledger).

The server keeps one version (`publishing.keep_versions = 1`) so every publish deletes the
previous version unless a reader holds a lease on it. A lease held by another process on
this machine (the test) stands for a query in flight in another server process.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from dpgate import AdminClient, Client, count
from dpgate_server.api.server import RunningServer, build_server
from dpgate_server.config import (
    DemoSettings,
    LimitsSettings,
    PublishingSettings,
    ServerSettings,
    Settings,
    StorageSettings,
)
from dpgate_server.store.leases import FileReaderLeases
from dpgate_server.store.store import DatasetStore
from tests.integration.api.conftest import prepare_ledger
from tests.unit.governance.helpers import DATASET_ID, SMALL, World, copy_world


@dataclass(frozen=True)
class Retaining:
    running: RunningServer
    world: World
    tokens: dict[str, str]

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.running.port}"

    def analyst(self) -> Client:
        return Client(self.target, self.tokens["analyst"])

    def admin(self) -> AdminClient:
        return AdminClient(self.target, self.tokens["admin"])

    @property
    def store(self) -> DatasetStore:
        return DatasetStore(self.world.store_root)


@pytest.fixture(scope="module")
def retaining(
    governance_source: World, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Retaining]:
    base = tmp_path_factory.mktemp("retention")
    world = copy_world(governance_source, base / "world")
    # What a publish killed before the last start left behind: the start must remove it.
    (world.store_root / DATASET_ID / "staging" / "0123456789abcdef" / "work").mkdir(parents=True)
    settings = Settings(
        server=ServerSettings(address="127.0.0.1:0", workers=1),
        storage=StorageSettings(
            data_dir=world.store_root, ledger_path=base / "ledger.sqlite", key_file=world.key_file
        ),
        demo=DemoSettings(enabled=False),
        limits=LimitsSettings(
            requests_per_second=10_000, burst=10_000, peer_requests_per_second=100_000
        ),
        publishing=PublishingSettings(memory_mb=16, keep_versions=1),
    )
    running = build_server(settings)
    try:
        tokens = prepare_ledger(settings.storage.ledger_path, DATASET_ID, SMALL)
        yield Retaining(running, world, tokens)
    finally:
        running.stop(grace_seconds=1)


def test_start_removes_what_a_killed_publish_left(retaining: Retaining) -> None:
    assert not any((retaining.world.store_root / DATASET_ID / "staging").iterdir())


def test_releases_on_a_deleted_version_stay_listed_and_repeat_for_free(
    retaining: Retaining, caplog: pytest.LogCaptureFixture
) -> None:
    question = count(DATASET_ID).by("practice_code").epsilon(0.5)
    with retaining.analyst() as analyst:
        first = analyst.query(question, idempotency_key="retention-1")
        assert not first.repeat
        with retaining.admin() as admin, caplog.at_level(logging.INFO):
            published = admin.publish_dataset_version(DATASET_ID)
        assert published.version != first.dataset_version
        assert retaining.store.versions(DATASET_ID) == [published.version]
        assert f"deleted old versions of {DATASET_ID}: {first.dataset_version}" in caplog.text

        listed = {r.release_id: r for r in analyst.releases(DATASET_ID)}
        assert listed[first.release_id].dataset_version == first.dataset_version

        budget_before = analyst.budget(DATASET_ID)
        again = analyst.query(question, idempotency_key="retention-1")
        assert again.release_id == first.release_id
        assert again.dataset_version == first.dataset_version
        # A retry is told what its first call was told (charged once, reported again).
        assert (again.charged, again.repeat, again.remaining) == (
            first.charged,
            False,
            first.remaining,
        )
        assert again.frame.equals(first.frame)
        assert analyst.budget(DATASET_ID) == budget_before

        fresh = analyst.query(question, idempotency_key="retention-2")
        assert (fresh.repeat, fresh.dataset_version) == (False, published.version)


def test_a_version_being_read_is_kept_until_the_reader_is_done(retaining: Retaining) -> None:
    leases = FileReaderLeases(retaining.world.store_root)
    reading = retaining.store.current_name(DATASET_ID)
    with leases.hold(DATASET_ID, reading):
        with retaining.admin() as admin:
            second = admin.publish_dataset_version(DATASET_ID).version
        assert retaining.store.versions(DATASET_ID) == [reading, second]
        retaining.store.open_version(DATASET_ID, reading).verify_files()
    with retaining.admin() as admin:
        third = admin.publish_dataset_version(DATASET_ID).version
    assert retaining.store.versions(DATASET_ID) == [third]


def test_a_query_holds_no_lease_once_answered(retaining: Retaining) -> None:
    with retaining.analyst() as analyst:
        answered = analyst.query(count(DATASET_ID).epsilon(0.25))
    leases = FileReaderLeases(retaining.world.store_root)
    with leases.retire(DATASET_ID, answered.dataset_version) as free:
        assert free

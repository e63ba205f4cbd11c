"""Version retention through the real server: old versions go once nobody reads them, and
releases made on them stay listed and free to repeat (answered from the ledger).

The server keeps one version (`publishing.keep_versions = 1`) so every publish deletes the
previous version unless a reader holds a lease on it. A lease held by another process on
this machine (the test) stands for a query in flight in another server process.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from dpgate import count
from dpgate_server.config import PublishingSettings
from dpgate_server.store.leases import FileReaderLeases
from tests.integration.governance.conftest import GovernedServerFactory, GovernedService
from tests.unit.governance.helpers import DATASET_ID, World

Retaining = GovernedService
"""A server keeping one version (`publishing.keep_versions = 1`), over its own world."""


def _leave_a_killed_publish(world: World) -> None:
    """What a publish killed before the last start left behind: the start must remove it."""
    (world.store_root / DATASET_ID / "staging" / "0123456789abcdef" / "work").mkdir(parents=True)


@pytest.fixture(scope="module")
def retaining(governed_server_factory: GovernedServerFactory) -> Iterator[Retaining]:
    with governed_server_factory(
        "retention",
        publishing=PublishingSettings(memory_mb=16, keep_versions=1),
        prepare_world=_leave_a_killed_publish,
    ) as service:
        yield service


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

"""Cheap repeats never change who gets what: the ledger decides every repeat, on both backends.

The answerer keeps prepared queries and decoded releases in memory; these tests ask
questions whose answer is cached and check that release sharing, a disabled requester and
a newly published version are still decided as without a cache, and that the memory kept
stays within its setting.
"""

from __future__ import annotations

import dataclasses
from decimal import Decimal
from pathlib import Path

import pytest

from dpgate_server.answers import CacheSizes
from dpgate_server.ledger import RequesterDisabled
from dpgate_server.queries import Aggregate, Query, Spend
from dpgate_server.store.store import DatasetStore
from tests.unit.ledger.answering import DATASET, answerer_on, tiny_store
from tests.unit.queries.conftest import publish, tiny_frame, tiny_metadata

SPEND = Spend.epsilon(Decimal("0.0000001"))
"""100 units: the ledger fixture grants each analyst 1,000."""


def _query(*group_by: str, spend: Spend = SPEND) -> Query:
    return Query(DATASET, Aggregate.count(), group_by=group_by, spend=spend)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> DatasetStore:
    return tiny_store(Path(tmp_path_factory.mktemp("cache_store")))


def test_a_cached_release_is_not_shared_when_sharing_is_off(setup, store: DatasetStore) -> None:
    answerer, executor = answerer_on(setup.ledger, store)
    query = _query("mode")
    alice = answerer.answer(setup.alice, setup.request(setup.alice), query, None)
    assert answerer.answer(setup.alice, setup.request(setup.alice), query, None).repeat
    setup.ledger.admin.set_release_sharing(DATASET, False, request=setup.operator)

    bob = answerer.answer(setup.bob, setup.request(setup.bob), query, None)

    assert not bob.repeat
    assert bob.charged_units == alice.charged_units > 0
    assert bob.release_id != alice.release_id
    assert executor.runs == 2


def test_a_cached_release_is_shared_free_when_sharing_is_on(setup, store: DatasetStore) -> None:
    answerer, executor = answerer_on(setup.ledger, store)
    query = _query("status")
    alice = answerer.answer(setup.alice, setup.request(setup.alice), query, None)
    bob = answerer.answer(setup.bob, setup.request(setup.bob), query, None)
    assert (bob.repeat, bob.charged_units, bob.release_id) == (True, 0, alice.release_id)
    assert bob.release.table == alice.release.table
    assert executor.runs == 1


def test_a_disabled_requester_is_refused_a_cached_repeat(setup, store: DatasetStore) -> None:
    answerer, _ = answerer_on(setup.ledger, store)
    query = _query("mode", "status")
    answerer.answer(setup.alice, setup.request(setup.alice), query, None)
    setup.ledger.admin.set_requester_enabled("alice", False, request=setup.operator)
    with pytest.raises(RequesterDisabled):
        answerer.answer(setup.alice, setup.request(setup.alice), query, None)


def test_a_new_version_is_a_new_question_despite_the_cache(setup, tmp_path: Path) -> None:
    store = tiny_store(tmp_path / "store")
    answerer, executor = answerer_on(setup.ledger, store)
    query = _query("practice_code")
    first = answerer.answer(setup.alice, setup.request(setup.alice), query, None)
    newer = publish(store, tiny_metadata(DATASET), tiny_frame(seed=9), verify=True)

    again = answerer.answer(setup.alice, setup.request(setup.alice), query, None)

    assert not again.repeat
    assert again.release.dataset_version == newer.version != first.release.dataset_version
    assert executor.runs == 2


def test_kept_releases_stay_within_the_setting(setup, store: DatasetStore) -> None:
    bound = 12_000
    answerer, _ = answerer_on(setup.ledger, store, CacheSizes(release_bytes=bound))
    weights = []
    for level in (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99):
        query = dataclasses.replace(_query("mode", "hour"), confidence_level=level)
        answer = answerer.answer(setup.alice, setup.request(setup.alice), query, None)
        weights.append(answerer.cached_release_bytes)
        assert answer.release.confidence_level == level
        assert answer.repeat == (level != 0.5)
    assert max(weights) <= bound
    assert weights[-1] > 0


def test_a_cache_of_zero_keeps_nothing_and_answers_the_same(setup, store: DatasetStore) -> None:
    answerer, _ = answerer_on(setup.ledger, store, CacheSizes(prepared_queries=0, release_bytes=0))
    query = _query("icb_code")
    first = answerer.answer(setup.alice, setup.request(setup.alice), query, None)
    again = answerer.answer(setup.bob, setup.request(setup.bob), query, None)
    assert again.repeat
    assert again.release == first.release
    assert answerer.cached_release_bytes == 0

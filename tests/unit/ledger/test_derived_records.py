"""Derived answers in the ledger: free, audited, listed with the releases, shared by rule.

Run against SQLite and PostgreSQL (`setup` is parametrized over both backends).
"""

from __future__ import annotations

import pytest

from dpgate_server.ledger import ReleaseNotFound, RequesterDisabled
from dpgate_server.ledger.model import DerivedRecord


def _derive(setup, principal, derived_id: str, source_release_id: str) -> int:
    return setup.ledger.record_derived(
        principal.requester_id,
        setup.dataset,
        setup.request(principal, text=f"derived {derived_id}"),
        derived_id=derived_id,
        source_release_id=source_release_id,
        dataset_version="v000001",
        canonical_query='{"accounting":"pure_dp"}',
    )


def _ids(page) -> list[str]:
    return [
        item.derived_id if isinstance(item, DerivedRecord) else item.release_id
        for item in page.releases
    ]


def _all_pages(setup, requester_id: str, limit: int) -> list[list[str]]:
    pages, after = [], None
    while True:
        page = setup.ledger.page_releases(requester_id, None, after=after, limit=limit)
        pages.append(_ids(page))
        after = page.next_after
        if after is None:
            return pages


def test_a_derived_answer_costs_nothing_and_is_audited_with_its_source(setup) -> None:
    source = setup.charge(setup.alice, "k1", 5).release.release_id
    before = setup.ledger.get_budget("alice", setup.dataset).remaining_units
    remaining = _derive(setup, setup.alice, "drv_1", source)
    assert remaining == before == setup.ledger.get_budget("alice", setup.dataset).remaining_units
    event = setup.ledger.list_events()[-1]
    assert (event.detail, event.cost_units, event.release_id) == (
        f"derived from {source}, cost 0",
        0,
        source,
    )
    assert (event.requester_id, event.outcome.value) == ("alice", "answered")
    assert setup.ledger.verify().ok


def test_derived_answers_are_listed_with_the_releases_newest_first(setup) -> None:
    first = setup.charge(setup.alice, "k1", 5).release.release_id
    setup.clock.advance(seconds=1)
    _derive(setup, setup.alice, "drv_1", first)
    setup.clock.advance(seconds=1)
    second = setup.charge(setup.alice, "k2", 5).release.release_id
    setup.clock.advance(seconds=1)
    _derive(setup, setup.alice, "drv_2", second)
    _derive(setup, setup.alice, "drv_1", first)  # given again: listed once
    assert _all_pages(setup, "alice", 10) == [["drv_2", second, "drv_1", first]]
    assert _all_pages(setup, "alice", 1) == [["drv_2"], [second], ["drv_1"], [first]]
    assert _all_pages(setup, "bob", 10) == [[]]


def test_items_recorded_between_pages_are_neither_repeated_nor_skipped(setup) -> None:
    made = []
    for i in range(3):
        setup.clock.advance(seconds=1)
        made.append(setup.charge(setup.alice, f"k{i}", 1).release.release_id)
        setup.clock.advance(seconds=1)
        _derive(setup, setup.alice, f"drv_{i}", made[-1])
        made.append(f"drv_{i}")
    first = setup.ledger.page_releases("alice", None, after=None, limit=3)
    setup.clock.advance(seconds=1)
    setup.charge(setup.alice, "later", 1)
    _derive(setup, setup.alice, "drv_later", made[0])
    second = setup.ledger.page_releases("alice", None, after=first.next_after, limit=3)
    assert second.next_after is None
    assert _ids(first) + _ids(second) == made[::-1]


def test_a_page_token_naming_another_requesters_items_is_refused(setup) -> None:
    source = setup.charge(setup.bob, "b1", 1).release.release_id
    _derive(setup, setup.bob, "drv_bob", source)
    with pytest.raises(ReleaseNotFound):
        setup.ledger.page_releases("alice", None, after="-|drv_bob", limit=10)
    with pytest.raises(ReleaseNotFound):
        setup.ledger.page_releases("alice", None, after=f"{source}|-", limit=10)


def test_sources_are_the_requesters_own_when_sharing_is_off(setup) -> None:
    alices = setup.charge(setup.alice, "a1", 1).release.release_id
    bobs = setup.charge(setup.bob, "b1", 1).release.release_id
    sources = setup.ledger.derivation_sources("alice", setup.dataset)
    assert {s.release_id for s in sources} == {alices, bobs}
    setup.ledger.admin.set_release_sharing(setup.dataset, False, request=setup.operator)
    sources = setup.ledger.derivation_sources("alice", setup.dataset)
    assert [s.release_id for s in sources] == [alices]


def test_a_disabled_requester_gets_no_sources(setup) -> None:
    setup.charge(setup.alice, "a1", 1)
    setup.ledger.admin.set_requester_enabled("alice", False, request=setup.operator)
    with pytest.raises(RequesterDisabled):
        setup.ledger.derivation_sources("alice", setup.dataset)


def test_sources_on_a_version_are_its_releases_and_those_recorded_without_one(setup) -> None:
    on_one = setup.charge(setup.alice, "a1", 1, dataset_version="v000001").release.release_id
    on_two = setup.charge(setup.bob, "b1", 1, dataset_version="v000002").release.release_id
    unknown = setup.charge(setup.alice, "a0", 1).release.release_id  # as before migration 7
    assert setup.ledger.get_release(on_one).dataset_version == "v000001"
    found = setup.ledger.derivation_sources("alice", setup.dataset, "v000001")
    assert [s.release_id for s in found] == [on_one, unknown]
    found = setup.ledger.derivation_sources("alice", setup.dataset, "v000002")
    assert [s.release_id for s in found] == [on_two, unknown]
    setup.ledger.admin.set_release_sharing(setup.dataset, False, request=setup.operator)
    assert setup.ledger.derivation_sources("alice", setup.dataset, "v000002") == [
        setup.ledger.get_release(unknown)
    ]
    assert setup.ledger.derivation_sources("alice", setup.dataset, "v000009")[0].payload == (
        b"answer"
    )

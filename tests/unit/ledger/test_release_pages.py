"""Paging a requester's releases: newest first, keyed by a release, one page read at a time."""

from __future__ import annotations

import pytest

from dpgate_server.ledger import ReleaseNotFound
from dpgate_server.vocabulary.accounting import Accounting


def _charge_all(setup, principal, keys):
    return [setup.charge(principal, key, 1).release.release_id for key in keys]


def _all_pages(setup, requester_id, limit, dataset_id=None):
    pages, after = [], None
    while True:
        page = setup.ledger.page_releases(requester_id, dataset_id, after=after, limit=limit)
        pages.append([r.release_id for r in page.releases])
        after = page.next_after
        if after is None:
            return pages


def test_pages_hold_the_requesters_releases_newest_first(setup):
    ids = _charge_all(setup, setup.alice, [f"a{i}" for i in range(5)])
    _charge_all(setup, setup.bob, ["b0"])
    newest_first = ids[::-1]
    assert _all_pages(setup, "alice", 2) == [newest_first[:2], newest_first[2:4], newest_first[4:]]


def test_an_exact_last_page_says_there_is_no_next(setup):
    ids = _charge_all(setup, setup.alice, ["a0", "a1"])
    page = setup.ledger.page_releases("alice", None, after=None, limit=2)
    assert ([r.release_id for r in page.releases], page.next_after) == (ids[::-1], None)


def test_a_release_recorded_between_pages_is_neither_repeated_nor_skipped(setup):
    ids = _charge_all(setup, setup.alice, ["a0", "a1", "a2", "a3"])
    first = setup.ledger.page_releases("alice", None, after=None, limit=2)
    _charge_all(setup, setup.alice, ["a4"])
    second = setup.ledger.page_releases("alice", None, after=first.next_after, limit=2)
    seen = [r.release_id for r in first.releases + second.releases]
    assert seen == ids[::-1]


def test_pages_filter_by_dataset(setup):
    admin = setup.ledger.admin
    admin.create_dataset(
        "other", accounting=Accounting.PURE_DP, cap_units=100, reason="r", request=setup.operator
    )
    admin.grant_allocation(
        "alice", "other", 10, request=setup.operator, purpose="testing", agreement="DSA-1"
    )
    ids = _charge_all(setup, setup.alice, ["a0"])
    setup.ledger.debit(
        "alice",
        "other",
        "o0",
        idempotency_key=None,
        cost_units=1,
        payload=b"x",
        request=setup.request(setup.alice),
    )
    assert _all_pages(setup, "alice", 10, setup.dataset) == [ids]


def test_paging_after_another_requesters_release_is_refused(setup):
    [bobs] = _charge_all(setup, setup.bob, ["b0"])
    with pytest.raises(ReleaseNotFound):
        setup.ledger.page_releases("alice", None, after=bobs, limit=10)
    with pytest.raises(ReleaseNotFound):
        setup.ledger.page_releases("alice", None, after="rel_unknown", limit=10)

"""The releases a requester received, for a preview on a new version (both backends).

Received means paid for, or served free under one of the requester's idempotency keys
(another requester's release shared with them); a release they never got is not theirs
to hear about, however the dataset shares releases.
"""

from __future__ import annotations


def _ids(releases):
    return [release.release_id for release in releases]


def test_own_and_shared_releases_received_are_found_and_no_others(setup):
    own = setup.charge(setup.alice, "question-v1", 100, idempotency_key="a1")
    served = setup.charge(setup.bob, "question-v1", 100, idempotency_key="b1")  # shared, free
    assert (served.release, served.charged_units) == (own.release, 0)
    setup.clock.advance(seconds=1)
    alone = setup.charge(setup.alice, "other-v1", 100)  # bob never asked it
    setup.clock.advance(seconds=1)
    keyless = setup.charge(setup.alice, "third-v1", 100)
    setup.charge(setup.bob, "third-v1", 100)  # served free without a key: no record of it
    keys = ["question-v1", "other-v1", "third-v1", "never-released"]

    assert _ids(setup.ledger.received_releases("alice", keys)) == [
        own.release.release_id,
        alone.release.release_id,
        keyless.release.release_id,
    ]
    assert _ids(setup.ledger.received_releases("bob", keys)) == [own.release.release_id]
    assert setup.ledger.received_releases("bob", []) == []


def test_many_keys_are_looked_up_in_parts(setup):
    last = setup.charge(setup.alice, "question-v1200", 100)
    setup.clock.advance(seconds=1)
    first = setup.charge(setup.alice, "question-v1", 100)
    keys = [f"question-v{n}" for n in range(1, 1201)]
    found = setup.ledger.received_releases("alice", keys)
    assert _ids(found) == [last.release.release_id, first.release.release_id]  # oldest first

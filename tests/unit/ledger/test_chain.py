"""The audit chain: tampering with any event, or cutting the tail, is detected and named."""

from __future__ import annotations

from dataclasses import replace

import pytest

from dpgate_server.ledger import ChainHead, Outcome, RequestInfo
from dpgate_server.ledger.chain import GENESIS_HASH, event_hash

EVENTS = 10
COLUMNS = (
    "at, requester_id, token_id, role, rpc, query_text, dataset_id, cost_units, outcome,"
    " release_id, request_id, detail, prev_hash, event_hash"
)


@pytest.fixture
def chain(setup):
    """The setup's 7 events plus 3 debits: a chain of exactly EVENTS events."""
    for key in ("k1", "k2", "k3"):
        setup.charge(setup.alice, key, 10)
    assert setup.ledger.head().count == EVENTS
    assert setup.ledger.verify().ok
    return setup


def _sql(setup, statement, *parameters):
    setup.store.execute(statement, *parameters)


def _rehash_from(setup, first_seq):
    """What a careful forger does: recompute every hash from `first_seq` on, and the head."""
    events = setup.ledger.list_events(after_seq=0, limit=10_000)
    running = GENESIS_HASH if first_seq == 1 else events[first_seq - 2].event_hash
    for event in events[first_seq - 1 :]:
        fixed = replace(event, prev_hash=running)
        fixed = replace(fixed, event_hash=event_hash(fixed))
        _sql(
            setup,
            "UPDATE audit_events SET prev_hash = ?, event_hash = ? WHERE seq = ?",
            fixed.prev_hash,
            fixed.event_hash,
            fixed.seq,
        )
        running = fixed.event_hash
    _sql(setup, "UPDATE audit_head SET event_count = ?, head_hash = ?", len(events), running)


def test_untouched_chain_verifies(chain):
    result = chain.ledger.verify()
    assert (result.ok, result.checked, result.head) == (True, EVENTS, chain.ledger.head())


@pytest.mark.parametrize("seq", range(1, EVENTS + 1))
def test_edited_event_is_named(chain, seq):
    _sql(chain, "UPDATE audit_events SET query_text = query_text || ' ' WHERE seq = ?", seq)
    result = chain.ledger.verify()
    assert (result.ok, result.first_bad_seq) == (False, seq)
    assert "altered" in (result.problem or "")


@pytest.mark.parametrize("seq", range(1, EVENTS + 1))
def test_edited_cost_is_named(chain, seq):
    _sql(chain, "UPDATE audit_events SET cost_units = cost_units + 1 WHERE seq = ?", seq)
    assert chain.ledger.verify().first_bad_seq == seq


@pytest.mark.parametrize("seq", range(1, EVENTS + 1))
def test_deleted_event_is_named(chain, seq):
    _sql(chain, "DELETE FROM audit_events WHERE seq = ?", seq)
    result = chain.ledger.verify()
    assert (result.ok, result.first_bad_seq) == (False, seq)


@pytest.mark.parametrize("seq", range(1, EVENTS))
def test_reordered_events_are_named(chain, seq):
    rows = {
        s: chain.store.fetch(f"SELECT {COLUMNS} FROM audit_events WHERE seq = ?", s)[0]
        for s in (seq, seq + 1)
    }
    assignments = ", ".join(f"{c.strip()} = ?" for c in COLUMNS.split(","))
    for target, source in ((seq, seq + 1), (seq + 1, seq)):
        chain.store.execute(
            f"UPDATE audit_events SET {assignments} WHERE seq = ?", *rows[source], target
        )
    result = chain.ledger.verify()
    assert (result.ok, result.first_bad_seq) == (False, seq)


@pytest.mark.parametrize("seq", range(1, EVENTS))
def test_edited_and_rehashed_event_breaks_the_next_link(chain, seq):
    _sql(chain, "UPDATE audit_events SET detail = 'forged' WHERE seq = ?", seq)
    (event,) = chain.ledger.list_events(after_seq=seq - 1, limit=1)
    _sql(chain, "UPDATE audit_events SET event_hash = ? WHERE seq = ?", event_hash(event), seq)
    result = chain.ledger.verify()
    assert (result.ok, result.first_bad_seq) == (False, seq + 1)


@pytest.mark.parametrize("keep", [0, 3, EVENTS - 1])
def test_cut_tail_is_named_against_a_kept_head(chain, keep):
    kept = chain.ledger.head()
    (last_kept,) = chain.ledger.list_events(after_seq=keep - 1, limit=1) if keep else (None,)
    _sql(chain, "DELETE FROM audit_events WHERE seq > ?", keep)
    head_hash = last_kept.event_hash if last_kept is not None else GENESIS_HASH
    _sql(chain, "UPDATE audit_head SET event_count = ?, head_hash = ?", keep, head_hash)
    assert chain.ledger.verify().ok  # consistent on its own: only a kept head tells
    result = chain.ledger.verify(expected_head=kept)
    assert (result.ok, result.first_bad_seq) == (False, keep + 1)
    assert "missing" in (result.problem or "")


def test_cut_tail_without_moving_the_head_is_named(chain):
    _sql(chain, "DELETE FROM audit_events WHERE seq > 7")
    result = chain.ledger.verify()
    assert (result.ok, result.first_bad_seq) == (False, 8)


def test_fully_rehashed_rewrite_is_caught_by_a_kept_head(chain):
    kept = chain.ledger.head()
    _sql(chain, "UPDATE audit_events SET cost_units = 0 WHERE seq = 8")
    _rehash_from(chain, 8)
    assert chain.ledger.verify().ok
    result = chain.ledger.verify(expected_head=kept)
    assert (result.ok, result.first_bad_seq) == (False, EVENTS)


def test_kept_head_from_the_past_still_verifies_as_the_chain_grows(chain):
    kept = chain.ledger.head()
    chain.charge(chain.bob, "k9", 5)
    assert chain.ledger.verify(expected_head=kept).ok


def test_garbage_in_an_event_is_named_not_crashed_on(chain):
    _sql(chain, "UPDATE audit_events SET outcome = 'bogus' WHERE seq = 4")
    result = chain.ledger.verify()
    assert (result.ok, result.first_bad_seq) == (False, 4)


def test_every_outcome_can_be_recorded_and_verified(setup):
    request = RequestInfo(request_id="x", rpc="DescribeDataset", principal=setup.alice)
    for outcome in (Outcome.ANSWERED, Outcome.INVALID, Outcome.DENIED, Outcome.FAILED):
        setup.ledger.record_event(request, outcome, detail=outcome.value)
    assert setup.ledger.verify().ok


def test_unauthenticated_events_must_go_through_the_aggregator(setup):
    with pytest.raises(ValueError, match="record_unauthenticated"):
        setup.ledger.record_event(RequestInfo("x", "RunQuery"), Outcome.UNAUTHENTICATED)


def test_head_type_is_comparable(chain):
    assert chain.ledger.head() == ChainHead(EVENTS, chain.ledger.verify().head.hash)


# -- the start-up check: the stored head and the last events only ------------------------


def test_recent_check_passes_an_untouched_chain(chain):
    result = chain.ledger.verify_recent(events=4)
    assert (result.ok, result.checked, result.head) == (True, 4, chain.ledger.head())


def test_recent_check_passes_an_empty_ledger(ledger_store):
    with ledger_store.open() as ledger:
        assert ledger.verify_recent().ok


@pytest.mark.parametrize("seq", [EVENTS - 3, EVENTS])
def test_recent_check_names_an_edited_recent_event(chain, seq):
    _sql(chain, "UPDATE audit_events SET detail = 'forged' WHERE seq = ?", seq)
    result = chain.ledger.verify_recent(events=4)
    assert (result.ok, result.first_bad_seq) == (False, seq)


def test_recent_check_does_not_read_older_events(chain):
    _sql(chain, "UPDATE audit_events SET detail = 'forged' WHERE seq = 2")
    assert chain.ledger.verify_recent(events=4).ok
    assert not chain.ledger.verify().ok


@pytest.mark.parametrize("seq", [EVENTS - 1, EVENTS])
def test_recent_check_names_a_deleted_recent_event(chain, seq):
    _sql(chain, "DELETE FROM audit_events WHERE seq = ?", seq)
    result = chain.ledger.verify_recent(events=4)
    assert (result.ok, result.first_bad_seq) == (False, seq)
    assert "missing" in (result.problem or "")


def test_recent_check_names_a_head_that_is_not_the_last_event(chain):
    _sql(chain, "UPDATE audit_head SET head_hash = ?", "ab" * 32)
    result = chain.ledger.verify_recent(events=4)
    assert (result.ok, result.first_bad_seq) == (False, EVENTS)
    assert "stored head" in (result.problem or "")


def test_recent_check_names_events_added_past_the_head(chain):
    _sql(chain, "UPDATE audit_head SET event_count = ?", EVENTS - 1)
    result = chain.ledger.verify_recent(events=4)
    assert not result.ok
    assert "added" in (result.problem or "")


def test_recent_check_names_garbage_instead_of_crashing(chain):
    _sql(chain, "UPDATE audit_events SET outcome = 'bogus' WHERE seq = ?", EVENTS)
    assert not chain.ledger.verify_recent(events=4).ok

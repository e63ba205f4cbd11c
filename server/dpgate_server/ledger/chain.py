"""The audit chain's hashing and verification, as pure functions over events.

Each event's hash is SHA-256 over a canonical JSON of all its fields *including the
previous event's hash*, so editing, deleting or reordering any event breaks every later
link. A cut tail (the last events deleted, and the stored head rewritten to match) is
only detectable against a head kept elsewhere: that is why every transparency export
publishes the head, and `verify` accepts an `expected_head`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from dpgate_server.canonical import canonical_digest
from dpgate_server.ledger._time import format_time
from dpgate_server.ledger.model import AuditEvent, ChainHead, ChainVerification

GENESIS_HASH = "0" * 64
"""The `prev_hash` of the first event."""


def canonical_fields(event: AuditEvent) -> dict[str, Any]:
    """Every field the hash covers (all but the hash itself)."""
    return {
        "seq": event.seq,
        "at": format_time(event.at),
        "requester_id": event.requester_id,
        "token_id": event.token_id,
        "role": event.role,
        "rpc": event.rpc,
        "query_text": event.query_text,
        "dataset_id": event.dataset_id,
        "cost_units": event.cost_units,
        "outcome": event.outcome.value,
        "release_id": event.release_id,
        "request_id": event.request_id,
        "detail": event.detail,
        "prev_hash": event.prev_hash,
    }


def event_hash(event: AuditEvent) -> str:
    """SHA-256 (hex) of the canonical JSON of the event's fields."""
    return canonical_digest(canonical_fields(event))


def verify_events(
    events: Iterable[AuditEvent],
    stored_head: ChainHead,
    expected_head: ChainHead | None = None,
) -> ChainVerification:
    """Check a chain read in storage order and name the first event that is wrong.

    Args:
        events: the events as stored, in ascending `seq` order.
        stored_head: the head the ledger keeps beside the chain.
        expected_head: a head published earlier (from a transparency export); the chain
            must still contain it, unchanged.

    Returns:
        The verification; `first_bad_seq` names an edited, reordered or moved event, or
        the sequence number of the first missing one.
    """
    running = GENESIS_HASH
    count = 0
    for event in events:
        problem = _link_problem(event, count + 1, running, expected_head)
        if problem is not None:
            seq, text = problem
            return _bad(count, running, seq, text)
        running = event.event_hash
        count += 1
    head = ChainHead(count=count, hash=running)
    problem = _head_problem(head, stored_head, expected_head)
    if problem is not None:
        return _bad(count, running, *problem)
    return ChainVerification(ok=True, checked=count, head=head)


def verify_tail(
    events: Iterable[AuditEvent], stored_head: ChainHead, first_seq: int
) -> ChainVerification:
    """Check the chain's last events and its stored head, without reading the whole chain.

    What the server checks at every start (a full `verify_events` reads every event, too
    slow to repeat at each start of a long chain): from `first_seq` on, no event is
    missing, each links to the one before, each hash recomputes, and the last one is the
    stored head. It catches an edited or deleted recent event and a head that no longer
    matches the chain; older edits are found by a full verification.

    Args:
        events: the stored events with `seq >= first_seq`, ascending.
        stored_head: the head the ledger keeps beside the chain.
        first_seq: where the check starts (>= 1); that event's `prev_hash` is taken on
            trust unless it is event 1, which must link to the genesis hash.

    Example:
        >>> verify_tail([], ChainHead(count=0, hash=GENESIS_HASH), first_seq=1).ok
        True
        >>> verify_tail([], ChainHead(count=3, hash="ab" * 32), first_seq=1).problem
        'events 1..3 are missing'
    """
    running = GENESIS_HASH
    checked = 0
    for event in events:
        seq = first_seq + checked
        if checked == 0 and seq > 1:
            running = event.prev_hash
        problem = _link_problem(event, seq, running, None)
        if problem is not None:
            return _tail_bad(checked, seq - 1, running, problem)
        running = event.event_hash
        checked += 1
    last = first_seq + checked - 1
    if checked == 0:
        if stored_head.count < first_seq:
            return ChainVerification(ok=True, checked=0, head=stored_head)
        return _tail_bad(
            0, last, running, (first_seq, f"events {first_seq}..{stored_head.count} are missing")
        )
    problem = _head_problem(ChainHead(count=last, hash=running), stored_head, None)
    if problem is not None:
        return _tail_bad(checked, last, running, problem)
    return ChainVerification(ok=True, checked=checked, head=ChainHead(count=last, hash=running))


def _tail_bad(
    checked: int, last_seq: int, running: str, problem: tuple[int, str]
) -> ChainVerification:
    return ChainVerification(
        ok=False,
        checked=checked,
        head=ChainHead(count=last_seq, hash=running),
        first_bad_seq=problem[0],
        problem=problem[1],
    )


def verify_from(
    events: Iterable[AuditEvent], kept: ChainHead, stored_head: ChainHead
) -> ChainVerification:
    """Check that the chain still holds `kept` and is intact from there to its end.

    Args:
        events: the stored events from sequence number `kept.count` on, ascending.
        kept: a head published earlier (a signed head): event `kept.count` had `kept.hash`.
        stored_head: the head the ledger keeps beside the chain.

    Returns:
        The verification of events `kept.count`.. (the events before it are covered by
        `kept.hash`, which chains them). A cut tail shows as the kept event missing.
    """
    if kept.count == 0:
        return verify_events(events, stored_head)
    iterator = iter(events)
    first = next(iterator, None)
    kept_problem = _kept_event_problem(first, kept)
    if first is None or kept_problem is not None:
        return _bad(0, "", kept.count, kept_problem or "")
    running = first.event_hash
    count = kept.count
    for event in iterator:
        problem = _link_problem(event, count + 1, running, None)
        if problem is not None:
            return _bad(count, running, *problem)
        running = event.event_hash
        count += 1
    head = ChainHead(count=count, hash=running)
    problem_at_head = _head_problem(head, stored_head, None)
    if problem_at_head is not None:
        return _bad(count, running, *problem_at_head)
    return ChainVerification(ok=True, checked=count - kept.count + 1, head=head)


def _kept_event_problem(first: AuditEvent | None, kept: ChainHead) -> str | None:
    """What is wrong with the event a kept head names, if anything."""
    if first is None or first.seq != kept.count:
        return f"event {kept.count} of the kept head is missing: the chain was cut"
    if event_hash(first) != first.event_hash:
        return f"event {first.seq} was altered"
    if first.event_hash != kept.hash:
        return f"event {first.seq} differs from the kept head: the chain was rewritten"
    return None


def _link_problem(
    event: AuditEvent, expected_seq: int, running: str, expected_head: ChainHead | None
) -> tuple[int, str] | None:
    """What is wrong with one event read at position `expected_seq`, if anything."""
    if event.seq != expected_seq:
        return expected_seq, f"event {expected_seq} is missing or out of place"
    if event.prev_hash != running:
        return event.seq, f"event {event.seq} does not link to the one before"
    if event_hash(event) != event.event_hash:
        return event.seq, f"event {event.seq} was altered"
    if (
        expected_head is not None
        and event.seq == expected_head.count
        and event.event_hash != expected_head.hash
    ):
        return (
            event.seq,
            f"the chain up to event {event.seq} differs from the kept head "
            "(rewritten at or before it)",
        )
    return None


def _head_problem(
    head: ChainHead, stored_head: ChainHead, expected_head: ChainHead | None
) -> tuple[int, str] | None:
    """A cut tail (against the kept head) or a chain that disagrees with the stored head."""
    count = head.count
    if expected_head is not None and count < expected_head.count:
        return count + 1, f"events {count + 1}..{expected_head.count} of the kept head are missing"
    if stored_head == head:
        return None
    if stored_head.count > count:
        return count + 1, f"events {count + 1}..{stored_head.count} are missing"
    if stored_head.count < count:
        return stored_head.count + 1, "events after the stored head were added"
    return count, f"event {count} differs from the stored head"


def _bad(count: int, running: str, seq: int, problem: str) -> ChainVerification:
    return ChainVerification(
        ok=False,
        checked=count,
        head=ChainHead(count=count, hash=running),
        first_bad_seq=seq,
        problem=problem,
    )

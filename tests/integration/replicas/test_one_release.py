"""One question, one release, whichever replicas it reaches and however often.

- The same new query arriving at every replica at the same moment is charged once and
  every caller gets the same release (same id, same noisy values).
  It is also computed once: the first caller holds the question's flight lock in the
  ledger's database while it computes; the others wait, then find the release.
- A retry (the same idempotency key) landing on another replica is answered from the
  ledger: not charged again, the same release.
"""

from __future__ import annotations

import threading
from decimal import Decimal

import pytest

from dpgate import Client, QueryResult, count
from dpgate_server.ledger.model import Outcome
from dpgate_server.spend import to_units_ceil
from tests.integration.replicas.conftest import scale
from tests.support.replicas import Replicas

ROUNDS = scale(4, 20)


def ask_everywhere_at_once(
    replicas: Replicas, tokens: list[str], epsilon: Decimal, idempotency_key: str | None
) -> list[QueryResult]:
    """The same query from one caller per replica, released together by a barrier."""
    query = count(replicas.dataset_id).where(status="DNA").by("mode").epsilon(epsilon)
    clients = [
        Client(target, token=token, retries=0, timeout=120)
        for target, token in zip(replicas.targets, tokens, strict=True)
    ]
    for client in clients:  # connected before the barrier, so the calls really overlap
        client.describe(replicas.dataset_id)
    barrier = threading.Barrier(len(clients))
    results: list[QueryResult | BaseException] = [RuntimeError("no answer")] * len(clients)

    def ask(i: int) -> None:
        barrier.wait()
        try:
            results[i] = clients[i].query(query, idempotency_key=idempotency_key)
        except BaseException as error:
            results[i] = error

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(clients))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=240)
    for client in clients:
        client.close()
    answers = [r for r in results if isinstance(r, QueryResult)]
    assert len(answers) == len(results), results
    return answers


def assert_one_release(answers: list[QueryResult], epsilon: Decimal, *, keyed: bool) -> None:
    assert len({a.release_id for a in answers}) == 1
    if keyed:  # one request, retried: each is told what the first call was told
        assert [(a.charged, a.repeat) for a in answers] == [(epsilon, False)] * len(answers)
    else:  # identical requests: one charged, the others served its release free
        assert sum(a.charged for a in answers) == epsilon
        assert sum(not a.repeat for a in answers) == 1
    first = answers[0].frame
    for other in answers[1:]:
        assert other.frame.equals(first)  # the same noisy values, not a second draw


@pytest.mark.timeout(300)
@pytest.mark.parametrize("keyed", [False, True], ids=["distinct-keys", "same-key"])
def test_the_same_new_query_at_every_replica_at_once_is_one_release(
    replicas: Replicas, keyed: bool
) -> None:
    requester_id, token = replicas.new_analyst(10, "twin")
    tokens = [token, *replicas.extra_tokens(requester_id, len(replicas.members) - 1)]
    base = Decimal("0.2") if keyed else Decimal("0.1")  # released questions are shared
    asked = [base + Decimal(r) / 1000 for r in range(ROUNDS)]  # a new question each round
    for round_number, epsilon in enumerate(asked):
        key = f"twin-{requester_id}-{round_number}" if keyed else None
        answers = ask_everywhere_at_once(replicas, tokens, epsilon, key)
        assert_one_release(answers, epsilon, keyed=keyed)

    with replicas.ledger() as ledger:
        budget = ledger.get_budget(requester_id, replicas.dataset_id)
        releases = ledger.list_releases(requester_id, replicas.dataset_id)
        events = [e for e in ledger.list_events(limit=10**7) if e.requester_id == requester_id]
        assert ledger.verify().ok
        assert ledger.reconcile().ok
    assert len(releases) == ROUNDS
    # computed once, too: every later caller waited on the flight lock and found the
    # release, none computed an answer the ledger then had to discard
    assert [e.detail for e in events if "discarded" in e.detail] == []
    assert budget.spent_units == sum(to_units_ceil(epsilon) for epsilon in asked)


@pytest.mark.timeout(300)
def test_a_retry_landing_on_another_replica_is_not_charged_twice(replicas: Replicas) -> None:
    requester_id, token = replicas.new_analyst(1, "retrier")
    query = count(replicas.dataset_id).by("sex").epsilon(Decimal("0.25"))
    key = f"retry-{requester_id}"
    with Client(replicas.targets[0], token=token, retries=0) as first_replica:
        first = first_replica.query(query, idempotency_key=key)
    answers = []
    for target in replicas.targets[1:]:
        with Client(target, token=token, retries=0) as other_replica:
            answers.append(other_replica.query(query, idempotency_key=key))

    assert first.charged == Decimal("0.25")
    assert not first.repeat
    for retried in answers:  # told what the first call was told, charged nothing more
        assert not retried.repeat
        assert retried.charged == first.charged
        assert retried.remaining == first.remaining
        assert retried.release_id == first.release_id
        assert retried.frame.equals(first.frame)
    with replicas.ledger() as ledger:
        assert ledger.get_budget(requester_id, replicas.dataset_id).spent_units == to_units_ceil(
            Decimal("0.25")
        )
        events = [
            e
            for e in ledger.list_events(limit=10**7)
            if e.requester_id == requester_id and e.rpc == "RunQuery"
        ]
    assert [e.outcome for e in events] == [Outcome.ANSWERED] * len(replicas.members)
    assert [e.cost_units for e in events] == [to_units_ceil(Decimal("0.25")), 0, 0]

"""Clients spread over three replicas race one allocation: no overspend, one chain.

Each replica is its own `dpgate-server` process with its own worker; they share only the
ledger (PostgreSQL, or one SQLite file) and the dataset store. The budget must hold as it
does for one server: spent <= allocation, every answer is a release and every release an
answer, answered x cost = spent, and the audit chain stays one linear, verifiable chain.

Every replica must answer during the race, whatever the scheduling: all clients first ask
one cheapest question at once (together they fit the allocation, so all are answered and
charged concurrently on every replica), wait for each other, then race to exhaustion. A
slow replica could otherwise find the allocation spent before its first answer.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from decimal import Decimal
from typing import Any

import pytest

from dpgate_server.ledger.model import Outcome
from dpgate_server.spend import to_units_floor
from tests.adversarial.wire_client import MAX_ATTEMPTS, NANO, SMALLEST_COST, race
from tests.integration.replicas.conftest import scale, spread
from tests.support.replicas import Replicas

CLIENTS = scale(24, 64)
ALLOWED = {"OK", "RESOURCE_EXHAUSTED", "OVERLOADED"}
FIRST_ROUND_WAIT_S = 180.0
"""How long a client waits for every other client's first answer (a worker may be starting)."""


def run_race(replicas: Replicas, allocation: float) -> tuple[str, list[dict[str, Any]]]:
    """CLIENTS threads, client i on replica i mod 3, each spending fresh queries.

    Each client's first query costs 0.01 epsilon (plus a nano offset), and no client goes on
    before every client has its first answer; so every replica answers, and the race to
    exhaustion starts with at least half the allocation left.
    """
    first_round = sum(SMALLEST_COST + Decimal(i * MAX_ATTEMPTS) / NANO for i in range(CLIENTS))
    assert 2 * first_round < allocation  # the first answers fit, with half left to race for
    requester_id, token = replicas.new_analyst(allocation, "racer")
    tokens = [token, *replicas.extra_tokens(requester_id, CLIENTS - 1)]
    records: list[dict[str, Any]] = []
    lock = threading.Lock()
    first_answered = threading.Barrier(CLIENTS, timeout=FIRST_ROUND_WAIT_S)
    start_at = time.monotonic() + 1.0

    def client(i: int) -> None:
        def emit(record: dict[str, Any]) -> None:
            with lock:
                records.append({**record, "replica": i % len(replicas.members)})

        time.sleep(max(0.0, start_at - time.monotonic()))
        try:
            race(
                spread(replicas.targets, i),
                tokens[i],
                replicas.dataset_id,
                i,
                100 + i,
                emit,
                after_first=first_answered.wait,
            )
        except Exception as error:  # a crashed client counts as an unexpected outcome
            emit({"outcome": "OTHER", "code": "CLIENT_CRASH", "reason": repr(error)})
        finally:
            # A client that stopped before the barrier must not hold the others there; one
            # that raced past it left nobody waiting (all had passed), so this is then moot.
            first_answered.abort()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    return requester_id, records


@pytest.mark.timeout(scale(300, 1_800))
def test_clients_spread_over_replicas_never_spend_beyond_the_allocation(
    replicas: Replicas,
) -> None:
    allocation = scale(1, 4)
    with replicas.ledger() as ledger:
        head_before = ledger.head().count
    requester_id, records = run_race(replicas, allocation)

    outcomes = Counter(r["outcome"] for r in records)
    unexpected = [r for r in records if r["outcome"] not in ALLOWED]
    assert unexpected == []
    answered = {r["release_id"]: r["charged"] for r in records if r["outcome"] == "OK"}
    assert len(answered) == outcomes["OK"]  # no release id handed out twice
    assert not any(r["repeat"] for r in records if r["outcome"] == "OK")
    answering = {r["replica"] for r in records if r["outcome"] == "OK"}
    assert answering == set(range(len(replicas.members)))  # every replica spent

    per_replica = Counter((r["replica"], r["outcome"]) for r in records)
    print(f"replica race: {dict(outcomes)}; by replica {dict(sorted(per_replica.items()))}")
    cap = to_units_floor(allocation)
    with replicas.ledger() as ledger:
        budget = ledger.get_budget(requester_id, replicas.dataset_id)
        releases = {
            r.release_id: r.cost_units
            for r in ledger.list_releases(requester_id, replicas.dataset_id)
        }
        since = ledger.list_events(after_seq=head_before, limit=10**7)
        assert ledger.reconcile().ok
        verification = ledger.verify()
        head_after = ledger.head()
    assert verification.ok, verification.problem
    assert verification.checked == head_after.count  # one linear chain, no gap, no fork
    assert budget.spent_units <= cap
    assert cap - budget.spent_units < to_units_floor(Decimal("0.01"))  # spent to the crumb
    assert answered == releases  # every answer is a release; no release nobody saw
    assert sum(releases.values()) == budget.spent_units
    events = [e for e in since if e.requester_id == requester_id and e.rpc == "RunQuery"]
    charged = {e.release_id: e.cost_units for e in events if e.outcome is Outcome.ANSWERED}
    assert charged == releases  # every charged answer has its one audit event
    by_outcome = Counter(e.outcome for e in events)
    assert by_outcome[Outcome.REFUSED] == outcomes["RESOURCE_EXHAUSTED"]
    assert by_outcome[Outcome.ANSWERED] == outcomes["OK"]
    assert [e.seq for e in since] == list(range(head_before + 1, head_after.count + 1))

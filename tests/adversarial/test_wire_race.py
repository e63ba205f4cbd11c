"""64 analysts (threads and processes) race one allocation through gRPC.

The ledger-level race (tests/integration/ledger/test_race.py) proves the debit; this
proves the whole path: validation, the budget pre-check, the worker queue, the debit,
the audit event and the answer on the wire, under contention.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from dpgate_server.ledger.model import Outcome
from dpgate_server.spend import to_units_floor
from tests.adversarial.conftest import Figures
from tests.adversarial.helpers import Server, scale
from tests.adversarial.wire_client import race

# One pytest-xdist unit: these modules share the session's two attacked servers.
pytestmark = pytest.mark.xdist_group("adversarial")


WIRE_CLIENT = Path(__file__).with_name("wire_client.py")
CLIENTS = 64
PROCESSES = 6
ALLOWED = {"OK", "RESOURCE_EXHAUSTED", "OVERLOADED"}


def run_race(server: Server, allocation: float, seed: int) -> tuple[str, list[dict[str, Any]]]:
    """One race: CLIENTS clients, PROCESSES of them in their own processes; all answers.

    Client i of race `seed` asks with index `seed * CLIENTS + i`, so no two clients of any
    race ask the same question (a question asked before would be a free shared release).
    """
    requester_id, token = server.new_analyst(allocation, "racer")
    tokens = [token, *server.extra_tokens(requester_id, CLIENTS - 1)]
    start_at = time.time() + 3.0  # a client process needs ~2 s to import grpc and polars
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                str(WIRE_CLIENT),
                server.target,
                tokens[i],
                server.dataset_id,
                str(start_at),
                str(seed * CLIENTS + i),
                str(seed * 1_000 + i),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(PROCESSES)
    ]
    records: list[dict[str, Any]] = []
    lock = threading.Lock()

    def emit(record: dict[str, Any]) -> None:
        with lock:
            records.append(record)

    def client(i: int) -> None:
        time.sleep(max(0.0, start_at - time.time()))
        try:
            race(
                server.target,
                tokens[i],
                server.dataset_id,
                seed * CLIENTS + i,
                seed * 1_000 + i,
                emit,
            )
        except Exception as error:  # a crash of the client counts as an unexpected outcome
            emit({"outcome": "OTHER", "code": "CLIENT_CRASH", "reason": repr(error)})

    threads = [threading.Thread(target=client, args=(i,)) for i in range(PROCESSES, CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=240)
    for process in processes:
        out, _ = process.communicate(timeout=240)
        assert process.returncode == 0
        records.extend(json.loads(line) for line in out.splitlines())
    return requester_id, records


@pytest.mark.timeout(scale(300, 1_800))
def test_racing_clients_never_spend_beyond_the_allocation_and_every_answer_is_recorded(
    server_a: Server, figures: Figures
) -> None:
    allocation = scale(2, 6)
    rounds = scale(1, 4)
    for round_number in range(rounds):
        with server_a.ledger() as ledger:
            head_before = ledger.head().count
        requester_id, records = run_race(server_a, allocation, seed=round_number)
        outcomes = Counter(r["outcome"] for r in records)
        unexpected = [r for r in records if r["outcome"] not in ALLOWED]
        answered = {r["release_id"]: r["charged"] for r in records if r["outcome"] == "OK"}
        assert len(answered) == outcomes["OK"]  # no release id handed out twice
        assert not any(r.get("repeat") for r in records if r["outcome"] == "OK")
        assert all(r["reason"] == "OVERLOADED" for r in records if r["outcome"] == "OVERLOADED")

        with server_a.ledger() as ledger:
            budget = ledger.get_budget(requester_id, server_a.dataset_id)
            releases = {
                r.release_id: r.cost_units
                for r in ledger.list_releases(requester_id, server_a.dataset_id)
            }
            events = [
                e
                for e in ledger.list_events(after_seq=head_before, limit=10**7)
                if e.requester_id == requester_id and e.rpc == "RunQuery"
            ]
            assert ledger.reconcile().ok
            assert ledger.verify().ok
        cap = to_units_floor(allocation)
        figures.add("race: rounds", 1)
        figures.add("race: queries raced", len(records))
        figures.add("race: OK", outcomes["OK"])
        figures.add("race: RESOURCE_EXHAUSTED", outcomes["RESOURCE_EXHAUSTED"])
        figures.add("race: OVERLOADED", outcomes["OVERLOADED"])
        figures.add("race: other statuses", len(unexpected))
        figures.add("race: nano-epsilon overspent", max(0, budget.spent_units - cap))
        figures.add("race: releases lost or unseen", len(answered.keys() ^ releases.keys()))
        assert unexpected == []
        assert budget.spent_units <= cap
        assert cap - budget.spent_units < to_units_floor(Decimal("0.01"))  # spent to the crumb
        assert answered == releases  # every answer is a release; no release nobody saw
        assert sum(releases.values()) == budget.spent_units
        charged = {
            e.release_id: e.cost_units
            for e in events
            if e.outcome is Outcome.ANSWERED and e.cost_units > 0
        }
        assert charged == releases  # every charged answer has its audit event
        by_outcome = Counter(e.outcome for e in events)
        assert by_outcome[Outcome.REFUSED] == outcomes["RESOURCE_EXHAUSTED"]
        overloaded = [e for e in events if e.outcome is Outcome.FAILED and e.detail == "OVERLOADED"]
        assert len(overloaded) == outcomes["OVERLOADED"]
        assert by_outcome[Outcome.ANSWERED] == outcomes["OK"]

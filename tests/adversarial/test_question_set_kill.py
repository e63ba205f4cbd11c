"""A question set is all or nothing under a kill (issue 18 item 4's acceptance).

`dpgate-server serve` runs a set of several fresh members and is SIGKILLed at a random
moment: before, while or after its members are computed, or as their one debit commits.
After every kill, before restarting on the same files, the ledger holds either every
member's release and the sum charged, or no release and no charge, and it reconciles.
After the restart the same set with the same idempotency key is answered in full and
charged the sum exactly once in all: replayed if it had committed, run afresh if not.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
import uuid
from decimal import Decimal
from pathlib import Path

import pytest

from dpgate import Client, DpgateError, QueryResult, QuerySpec, count
from dpgate_server.spend import to_units_floor
from dpgate_server.store.store import DatasetVersion
from tests.adversarial.conftest import Figures
from tests.adversarial.helpers import (
    Server,
    kill_group,
    scale,
    start_killable_server,
    start_subprocess,
)

pytestmark = pytest.mark.xdist_group("adversarial")

MEMBERS = 5


def question_set(dataset_id: str, round_number: int) -> list[QuerySpec]:
    """MEMBERS fresh questions (new spends each round), each a while in a worker."""
    return [
        count(dataset_id)
        .by("practice_code", "week")
        .contributions(3)
        .epsilon(Decimal("0.05") + Decimal(round_number * 100 + member).scaleb(-9))
        for member in range(MEMBERS)
    ]


def held(server: Server, requester_id: str) -> tuple[set[str], int]:
    """(release ids, spent units) the ledger holds for the requester; checks reconcile."""
    with server.ledger() as ledger:
        reconciliation = ledger.reconcile()
        assert reconciliation.ok, reconciliation.problems
        assert ledger.verify().ok
        releases = {r.release_id for r in ledger.list_releases(requester_id)}
    return releases, server.spent_units(requester_id)


@pytest.mark.timeout(scale(400, 3_600))
def test_a_question_set_is_all_or_nothing_under_a_kill(
    small_dataset: DatasetVersion, tmp_path: Path, figures: Figures
) -> None:
    rounds = scale(4, 20)
    rng = random.Random(20261204)
    config, process, port, server, _ = start_killable_server(small_dataset, tmp_path)
    requester_id, token = server.new_analyst(10, "planner")
    outcomes = {"all": 0, "none": 0}
    try:
        # An uncut set first: how long one takes, to spread the kills over it.
        started = time.monotonic()
        with Client(f"127.0.0.1:{port}", token=token, retries=0, timeout=120) as client:
            client.run_set(question_set(server.dataset_id, rounds))
        duration = time.monotonic() - started
        for round_number in range(rounds):
            asked = question_set(server.dataset_id, round_number)
            cost = sum(to_units_floor(q.spend) for q in asked if q.spend is not None)
            key = uuid.uuid4().hex
            before, spent_before = held(server, requester_id)
            answered: list[QueryResult] = []

            def run(target: str, asked: list[QuerySpec], key: str, out: list[QueryResult]) -> None:
                with (
                    Client(target, token=token, retries=0, timeout=120) as client,
                    contextlib.suppress(DpgateError),  # the server died under it
                ):
                    out.extend(client.run_set(asked, idempotency_key=key))

            caller = threading.Thread(target=run, args=(f"127.0.0.1:{port}", asked, key, answered))
            caller.start()
            time.sleep(rng.uniform(0.0, 1.2 * duration))
            kill_group(process)  # the server and its workers, at once
            caller.join(timeout=60)
            assert not caller.is_alive()

            after, spent_after = held(server, requester_id)
            new = after - before
            if new:
                assert len(new) == MEMBERS
                assert spent_after - spent_before == cost
                outcomes["all"] += 1
            else:
                assert spent_after == spent_before
                outcomes["none"] += 1
            if answered:  # the client was told: then it must all be there
                assert {r.release_id for r in answered} == new

            process, port = start_subprocess(config)
            with Client(f"127.0.0.1:{port}", token=token, retries=0, timeout=120) as client:
                retried = client.run_set(asked, idempotency_key=key)
            final, spent_final = held(server, requester_id)
            assert spent_final - spent_before == cost  # charged once in all
            assert {r.release_id for r in retried} == final - before
            assert sum(to_units_floor(r.charged) for r in retried) == cost
            if new:
                assert final == after  # replayed, nothing new
    finally:
        kill_group(process)
    figures.add("question set kills: all members committed", outcomes["all"])
    figures.add("question set kills: nothing committed", outcomes["none"])

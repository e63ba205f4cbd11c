"""Group commit never acknowledges a request whose audit event is not in the ledger.

The SQLite ledger shares one fsync among the writers that commit while it runs
(`ledger/sqlite.py`, `_GroupSync`): a request's audit event must still be committed, and
its fsync finished, before the answer is sent. Here many analysts call at once (free
repeats, charged fresh queries and budget reads, each of which writes one event through
the group commit) while `dpgate-server serve` is SIGKILLed at a random moment, again and
again, on the same ledger. After every kill:

- every answer a client received has its ANSWERED event: per analyst, RPC and release,
  the ledger holds at least as many events as the client was told OK (an answer sent
  before its event was written would leave fewer);
- every charged release a client received is stored with its cost and charging event.

A SIGKILL loses what the process had not yet handed to the kernel, not what the kernel
had not yet synced; the fsync half of "durable" is covered by the ledger's own tests.
The launcher is the crash test's (`helpers.start_subprocess`).
"""

from __future__ import annotations

import functools
import itertools
import os
import random
import signal
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import pytest

from dpgate import Client, DpgateError, count
from dpgate_server.ledger.model import Outcome
from dpgate_server.spend import to_units_floor
from dpgate_server.store.store import DatasetVersion
from tests.adversarial.conftest import Figures
from tests.adversarial.helpers import (
    Server,
    kill_group,
    scale,
    start_killable_server,
    start_subprocess,
    wait_for,
)

pytestmark = pytest.mark.xdist_group("adversarial")

ANALYSTS = 8
FRESH_EVERY = 4
"""One step in this many asks a new (charged) question; the others repeat or read."""

Key = tuple[str, str, str]
"""(requester id, RPC, release id or "") of an ANSWERED audit event."""


@dataclass
class Acknowledged:
    """What clients were told OK, across every round."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    answers: Counter[Key] = field(default_factory=Counter)
    charged: dict[str, int] = field(default_factory=dict)
    failures: Counter[str] = field(default_factory=Counter)

    def answer(self, key: Key, charged_units: int = 0) -> None:
        with self.lock:
            self.answers[key] += 1
            if charged_units:
                self.charged[key[2]] = charged_units

    def told(self) -> int:
        """How many answers clients were told OK so far."""
        with self.lock:
            return sum(self.answers.values())

    def told_more_than(self, count: int) -> bool:
        return self.told() > count

    def snapshot(self) -> tuple[Counter[Key], dict[str, int]]:
        with self.lock:
            return Counter(self.answers), dict(self.charged)


def _analyst(
    target: str,
    requester_id: str,
    token: str,
    dataset_id: str,
    seed: int,
    stop: threading.Event,
    seen: Acknowledged,
) -> None:
    """Repeat one question, read the budget, and now and then ask a new question."""
    fresh = itertools.count()
    repeat = count(dataset_id).by("hcp_type").epsilon(0.125)
    with Client(target, token=token, retries=0, timeout=30) as client:
        for step in itertools.count():
            if stop.is_set():
                return
            try:
                if step % FRESH_EVERY == 0:
                    epsilon = Decimal("0.01") + Decimal(seed * 10**6 + next(fresh)) / 10**9
                    result = client.query(count(dataset_id).where(status="DNA").epsilon(epsilon))
                    charged = to_units_floor(result.charged)
                    seen.answer((requester_id, "RunQuery", result.release_id), charged)
                elif step % 2:
                    result = client.query(repeat)
                    seen.answer((requester_id, "RunQuery", result.release_id))
                else:
                    client.budget(dataset_id)
                    seen.answer((requester_id, "GetBudget", ""))
            except DpgateError as error:
                with seen.lock:
                    seen.failures[error.code or "NONE"] += 1
                time.sleep(0.02)


@pytest.mark.timeout(scale(300, 3_600))
def test_no_answer_is_sent_before_its_audit_event_is_committed(
    small_dataset: DatasetVersion, tmp_path: Path, figures: Figures
) -> None:
    kills = scale(3, 20)
    rng = random.Random(20261204)
    config, process, port, server, _ = start_killable_server(small_dataset, tmp_path)
    analysts = [server.new_analyst(1_000, "committer") for _ in range(ANALYSTS)]
    seen = Acknowledged()
    answered_before_kill = []
    try:
        for round_number in range(kills):
            stop = threading.Event()
            before = seen.told()
            loads = [
                threading.Thread(
                    target=_analyst,
                    args=(
                        f"127.0.0.1:{port}",
                        requester_id,
                        token,
                        server.dataset_id,
                        ANALYSTS * round_number + i,
                        stop,
                        seen,
                    ),
                )
                for i, (requester_id, token) in enumerate(analysts)
            ]
            for thread in loads:
                thread.start()
            # Kill only once answers flow, then at a random moment of the load.
            assert wait_for(functools.partial(seen.told_more_than, before), timeout=120)
            time.sleep(rng.uniform(0.2, 2.0))
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
            stop.set()
            for thread in loads:
                thread.join(timeout=60)
            assert not any(thread.is_alive() for thread in loads)
            kill_group(process)
            answered_before_kill.append(seen.told() - before)

            _check_every_answer_is_audited(server, seen)
            figures.add("group commit: kills survived", 1)
            process, port = start_subprocess(config)
    finally:
        kill_group(process)
    answers, charged = seen.snapshot()
    figures.add("group commit: answers acknowledged", sum(answers.values()))
    figures.add("group commit: charged releases acknowledged", len(charged))
    # The load exercised each kind of write in the kills: fresh charges, repeats, reads.
    assert all(n > 0 for n in answered_before_kill)
    assert charged
    assert any(rpc == "RunQuery" and release not in charged for _, rpc, release in answers)
    assert any(rpc == "GetBudget" for _, rpc, _ in answers)


def _check_every_answer_is_audited(server: Server, seen: Acknowledged) -> None:
    answers, charged = seen.snapshot()  # the clients have stopped: nothing more is told
    with server.ledger() as ledger:
        events = ledger.list_events(limit=10**8)
        releases = {r.release_id: r.cost_units for r in ledger.list_releases()}
        verification = ledger.verify()
    assert verification.ok, verification.problem
    audited: Counter[Key] = Counter(
        (e.requester_id or "", e.rpc, e.release_id or "")
        for e in events
        if e.outcome is Outcome.ANSWERED
    )
    short = {key: (told, audited[key]) for key, told in answers.items() if audited[key] < told}
    assert short == {}  # (told OK, events) for any answer sent without its event
    assert {r: releases.get(r) for r in charged} == charged
    charging = {
        e.release_id: e.cost_units
        for e in events
        if e.outcome is Outcome.ANSWERED and e.cost_units > 0 and e.release_id in charged
    }
    assert charging == charged

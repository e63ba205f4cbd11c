"""`dpgate-server serve` SIGKILLed again and again under mixed load loses nothing.

The ledger-level crash test (tests/integration/ledger/test_crash.py) kills a process that
only debits. Here the whole server dies at a random moment while analysts run fresh and
repeated queries, send bad input, an administrator tops up an allocation and strangers
call without tokens. After every kill, before restarting on the same files:

- no phantom debit: every balance equals the releases behind it (`reconcile`);
- no lost release: every release id a client received is stored, with its audit event;
- no lost administrative change a client saw acknowledged;
- the audit chain verifies and never shrinks; the dataset's files match their digests.
"""

from __future__ import annotations

import functools
import itertools
import os
import random
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import psutil
import pytest

from dpgate import AdminClient, Client, DpgateError, count, total
from dpgate_server.ledger.model import Outcome
from dpgate_server.spend import to_units_floor
from dpgate_server.store.store import DatasetStore, DatasetVersion
from tests.adversarial.conftest import Figures
from tests.adversarial.helpers import (
    Server,
    kill_group,
    scale,
    start_killable_server,
    start_subprocess,
    wait_for,
)

# One pytest-xdist unit: these modules share the session's two attacked servers.
pytestmark = pytest.mark.xdist_group("adversarial")


TOP_UP = Decimal("0.01")
POOR_EPSILON = 0.3


@dataclass
class Seen:
    """What clients were told, across every round (the ledger must hold all of it)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    releases: dict[str, int] = field(default_factory=dict)
    top_ups_acknowledged: int = 0
    top_ups_attempted: int = 0
    calls: int = 0
    codes: dict[str, int] = field(default_factory=dict)

    def answer(self, release_id: str, cost_units: int) -> None:
        with self.lock:
            self.releases[release_id] = cost_units
            self.calls += 1

    def status(self, code: str) -> None:
        with self.lock:
            self.codes[code] = self.codes.get(code, 0) + 1
            self.calls += 1


def _loop(stop: threading.Event, seen: Seen, step: Callable[[], None]) -> None:
    while not stop.is_set():
        try:
            step()
        except DpgateError as error:
            seen.status(error.code or "NONE")
            time.sleep(0.02)


def _spender(
    target: str, token: str, dataset_id: str, seed: int, stop: threading.Event, seen: Seen
) -> None:
    rng = random.Random(seed)
    counter = itertools.count()
    with Client(target, token=token, retries=0, timeout=30) as client:

        def step() -> None:
            epsilon = Decimal("0.05") + Decimal(seed * 10**6 + next(counter)) / 10**9
            shape = rng.randrange(3)
            query = (
                count(dataset_id).by("practice_code", "week").epsilon(epsilon)
                if shape == 0
                else total(dataset_id, "duration_minutes").by("mode").epsilon(epsilon)
                if shape == 1
                else count(dataset_id).where(status="DNA").epsilon(epsilon)
            )
            result = client.query(query)
            seen.answer(result.release_id, to_units_floor(result.charged))

        _loop(stop, seen, step)


def _repeater(target: str, token: str, dataset_id: str, stop: threading.Event, seen: Seen) -> None:
    query = count(dataset_id).by("hcp_type").epsilon(0.125)
    with Client(target, token=token, retries=0, timeout=30) as client:

        def step() -> None:
            result = client.query(query)
            seen.answer(result.release_id, to_units_floor(result.release_cost))

        _loop(stop, seen, step)


def _bad_input(target: str, token: str, dataset_id: str, stop: threading.Event, seen: Seen) -> None:
    bad = [
        count(dataset_id).by("patient_key").epsilon(0.1),
        count(dataset_id).epsilon(-1),
        count("no_such_dataset").epsilon(0.1),
        count(dataset_id).where(mode="Carrier pigeon").epsilon(0.1),
    ]
    with Client(target, token=token, retries=0, timeout=30) as client:
        cycle = itertools.cycle(bad)

        def step() -> None:
            client.budget(dataset_id)
            client.preview(count(dataset_id).by("sex").epsilon(0.2))
            client.query(next(cycle))

        _loop(stop, seen, step)


def _stranger(target: str, stop: threading.Event, seen: Seen) -> None:
    with Client(target, token="dpg_" + "x" * 43, retries=0, timeout=30) as client:

        def step() -> None:
            client.datasets()

        _loop(stop, seen, step)


def _administrator(
    target: str, token: str, requester_id: str, dataset_id: str, stop: threading.Event, seen: Seen
) -> None:
    with AdminClient(target, token=token, timeout=30) as admin:

        def step() -> None:
            with seen.lock:
                seen.top_ups_attempted += 1
            admin.grant(
                requester_id, dataset_id, epsilon=TOP_UP, purpose="testing", agreement="DSA-TEST"
            )
            with seen.lock:
                seen.top_ups_acknowledged += 1
            time.sleep(0.05)

        _loop(stop, seen, step)


def _orphans(session_id: int) -> list[psutil.Process]:
    """Processes still alive in the killed server's session (its query workers)."""
    found = []
    for process in psutil.process_iter():
        try:
            if os.getsid(process.pid) == session_id and process.status() != "zombie":
                found.append(process)
        except (psutil.Error, ProcessLookupError, PermissionError):
            continue
    return found


def _no_orphans(session_id: int) -> bool:
    return not _orphans(session_id)


@pytest.mark.timeout(scale(300, 3_600))
def test_sigkilled_server_never_loses_a_release_or_a_debit(
    small_dataset: DatasetVersion, tmp_path: Path, figures: Figures
) -> None:
    kills = scale(3, 20)
    rng = random.Random(20250611)
    config, process, port, server, tokens = start_killable_server(small_dataset, tmp_path)
    spenders = [server.new_analyst(1_000, "spender") for _ in range(2)]
    poor_id, poor_token = server.new_analyst(POOR_EPSILON, "poor")
    topped_id, _ = server.new_analyst(1, "topped")
    seen = Seen()
    previous_head = previous_releases = 0
    orphans_seen = 0
    try:
        for round_number in range(kills):
            target = f"127.0.0.1:{port}"
            stop = threading.Event()
            loads = [
                threading.Thread(
                    target=_spender,
                    args=(target, token, server.dataset_id, 10 * round_number + i, stop, seen),
                )
                for i, (_, token) in enumerate([*spenders, (poor_id, poor_token)])
            ]
            loads += [
                threading.Thread(
                    target=_repeater, args=(target, spenders[0][1], server.dataset_id, stop, seen)
                ),
                threading.Thread(
                    target=_bad_input, args=(target, spenders[1][1], server.dataset_id, stop, seen)
                ),
                threading.Thread(target=_stranger, args=(target, stop, seen)),
                threading.Thread(
                    target=_administrator,
                    args=(target, tokens["admin"], topped_id, server.dataset_id, stop, seen),
                ),
            ]
            for thread in loads:
                thread.start()
            time.sleep(rng.uniform(0.5, 3.0))
            os.kill(process.pid, signal.SIGKILL)  # the server only, as the OOM killer would
            process.wait(timeout=30)
            stop.set()
            for thread in loads:
                thread.join(timeout=60)
            assert not any(thread.is_alive() for thread in loads)
            if not wait_for(functools.partial(_no_orphans, process.pid), timeout=15):
                orphans_seen += len(_orphans(process.pid))
            kill_group(process)  # cleanup only; counted above

            previous_head, previous_releases = _check_ledger(
                server, seen, topped_id, previous_head, previous_releases
            )
            DatasetStore(server.store_root).current(server.dataset_id).verify_files()
            figures.add("crash: kills survived", 1)
            process, port = start_subprocess(config)

        with Client(f"127.0.0.1:{port}", token=spenders[0][1], timeout=60) as client:
            listed = {r.release_id for r in client.releases(server.dataset_id)}
        with server.ledger() as ledger:
            own = {r.release_id for r in ledger.list_releases(spenders[0][0])}
        assert own <= listed  # after the last restart the analyst can list all its releases
    finally:
        kill_group(process)
    figures.add("crash: calls during kills", seen.calls)
    figures.add("crash: releases seen by clients", len(seen.releases))
    figures.add("crash: admin top-ups acknowledged", seen.top_ups_acknowledged)
    figures.set("crash: client statuses while killed", dict(sorted(seen.codes.items())))
    figures.add("crash: orphaned worker processes", orphans_seen)
    assert orphans_seen == 0
    assert len(seen.releases) > kills  # the load did get answers between kills


def _check_ledger(
    server: Server, seen: Seen, topped_id: str, previous_head: int, previous_releases: int
) -> tuple[int, int]:
    with server.ledger() as ledger:
        reconciliation = ledger.reconcile()
        assert reconciliation.ok, reconciliation.problems
        verification = ledger.verify()
        assert verification.ok, verification.problem
        releases = {r.release_id: r.cost_units for r in ledger.list_releases()}
        charged = {
            e.release_id: e.cost_units
            for e in ledger.list_events(limit=10**8)
            if e.outcome is Outcome.ANSWERED and e.cost_units > 0
        }
        topped = ledger.get_budget(topped_id, server.dataset_id)
    with seen.lock:
        missing = {r for r in seen.releases if r not in releases}
        acknowledged, attempted = seen.top_ups_acknowledged, seen.top_ups_attempted
    assert missing == set()  # no release a client saw was lost
    assert {r: releases[r] for r in seen.releases} == seen.releases
    assert charged == releases  # every release has its charging audit event, and vice versa
    top_up = to_units_floor(TOP_UP)
    assert to_units_floor(1) + acknowledged * top_up <= topped.granted_units
    assert topped.granted_units <= to_units_floor(1) + attempted * top_up
    assert verification.head.count >= previous_head
    assert len(releases) >= previous_releases
    return verification.head.count, len(releases)

"""A spender SIGKILLed at random moments never leaves the ledger inconsistent."""

from __future__ import annotations

import random
import select
import signal
import subprocess
import time

import pytest

from dpgate_server.ledger import Ledger, Outcome

pytestmark = pytest.mark.slow  # long: started first on parallel runs


def _wait_for_ready(process, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([process.stdout], [], [], 0.05)
        if ready:
            return process.stdout.readline().strip() == "ready"
        if process.poll() is not None:
            return False
    return False


def _wait_for_release(process, timeout):
    """The first release the spender acknowledges (its id), or None by the timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([process.stdout], [], [], 0.05)
        if ready:
            line = process.stdout.readline().strip()
            if line.startswith("rel_"):
                return line
        elif process.poll() is not None:
            return None
    return None


def test_sigkill_at_random_moments_never_breaks_the_ledger(
    make_ledger_file, worker_command, full_run_scale
):
    path = make_ledger_file(cap=10**15, grant=10**14)
    rng = random.Random(20250106)
    kills = full_run_scale(20, 200)
    previous_releases = 0
    previous_head = 0
    acknowledged: set[str] = set()
    progressed_rounds = 0
    for round_number in range(kills):
        process = subprocess.Popen(
            worker_command("crash", path, round_number),
            stdout=subprocess.PIPE,
            text=True,
        )
        if round_number % 5 == 4:
            time.sleep(rng.uniform(0.0, 0.25))  # sometimes while it is still opening
        else:
            assert _wait_for_ready(process, timeout=30)
            if round_number % 5 == 3:
                # Progress that does not depend on the machine's speed: this round is
                # killed only after its first acknowledged release.
                first = _wait_for_release(process, timeout=60)
                assert first is not None
                acknowledged.add(first)
                progressed_rounds += 1
            time.sleep(rng.uniform(0.0, 0.12))
        process.send_signal(signal.SIGKILL)
        out, _ = process.communicate(timeout=30)
        acknowledged.update(line for line in out.splitlines() if line.startswith("rel_"))

        with Ledger.open(path) as ledger:
            reconciliation = ledger.reconcile()
            assert reconciliation.ok, reconciliation.problems
            verification = ledger.verify()
            assert verification.ok, verification.problem
            releases = {r.release_id: r.cost_units for r in ledger.list_releases()}
            assert ledger.get_dataset("d").spent_units == sum(releases.values())
            assert acknowledged <= releases.keys()  # nothing returned was lost
            charged = {
                e.release_id: e.cost_units
                for e in ledger.list_events(limit=10**7)
                if e.outcome is Outcome.ANSWERED and e.cost_units > 0
            }
            assert charged == releases  # every release has its audit event, and vice versa
            assert len(releases) >= previous_releases
            assert verification.head.count >= previous_head
            previous_releases, previous_head = len(releases), verification.head.count
    assert progressed_rounds > 0
    assert previous_releases >= progressed_rounds  # the spender made progress between kills

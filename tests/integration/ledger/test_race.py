"""Concurrent debits on a real ledger (SQLite file, PostgreSQL database), from threads and
processes at once."""

from __future__ import annotations

import json
import random
import subprocess
import threading
import time
import uuid

from dpgate_server.ledger import BudgetExhausted, Ledger, RequestInfo

CAP = 4_000


def _spend_until_empty(ledger, seed, successes, refusals, errors):
    rng = random.Random(seed)
    while True:
        cost = rng.randint(1, 40)
        key = uuid.uuid4().hex
        try:
            result = ledger.debit(
                "spender",
                "d",
                key,
                idempotency_key=key,
                cost_units=cost,
                payload=key.encode(),
                request=RequestInfo(request_id=key, rpc="RunQuery", query_text=key),
            )
        except BudgetExhausted as refused:
            refusals.append((refused.requested_units, refused.remaining_units))
            if refused.remaining_units == 0:
                return
            continue
        except Exception as error:
            errors.append(error)
            return
        successes.append((result.release.release_id, result.charged_units))


def test_threads_and_processes_never_spend_beyond_the_cap(
    make_ledger_file, worker_command, full_run_scale
):
    path = make_ledger_file(cap=CAP, grant=CAP)
    threads_count = 64
    processes_count = full_run_scale(4, 8)
    start_at = time.time() + 1.0
    processes = [
        subprocess.Popen(
            worker_command("race", path, start_at, seed), stdout=subprocess.PIPE, text=True
        )
        for seed in range(processes_count)
    ]
    successes: list[tuple[str, int]] = []
    refusals: list[tuple[int, int]] = []
    errors: list[BaseException] = []
    with Ledger.open(path) as ledger:
        barrier = threading.Barrier(threads_count)

        def run(seed):
            barrier.wait()
            time.sleep(max(0.0, start_at - time.time()))
            _spend_until_empty(ledger, 1_000 + seed, successes, refusals, errors)

        threads = [threading.Thread(target=run, args=(i,)) for i in range(threads_count)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        for process in processes:
            out, _ = process.communicate(timeout=120)
            assert process.returncode == 0, out[-2000:]
            for line in out.splitlines():
                record = json.loads(line)
                if "release_id" in record:
                    successes.append((record["release_id"], record["cost"]))
                else:
                    refusals.append(tuple(record["refused"]))

        assert errors == []
        releases = {r.release_id: r.cost_units for r in ledger.list_releases()}
        spent = ledger.get_dataset("d").spent_units
        assert sum(cost for _, cost in successes) == spent == sum(releases.values())
        assert spent == CAP  # everyone spent until exactly nothing was left
        assert dict(successes) == releases  # every success has its release, and no other
        assert all(requested > remaining for requested, remaining in refusals)
        assert ledger.reconcile().ok
        assert ledger.verify().ok


def test_concurrent_identical_queries_are_charged_once(make_ledger_file):
    path = make_ledger_file(cap=10_000, grant=10_000)
    results = []
    errors: list[BaseException] = []
    with Ledger.open(path) as ledger:
        barrier = threading.Barrier(32)

        def run(i):
            barrier.wait()
            try:
                results.append(
                    ledger.debit(
                        "spender" if i % 2 else "other",
                        "d",
                        "the same canonical query",
                        idempotency_key=f"idem-{i}",
                        cost_units=100,
                        payload=f"answer computed by {i}".encode(),
                        request=RequestInfo(request_id=str(i), rpc="RunQuery"),
                    )
                )
            except Exception as error:
                errors.append(error)

        threads = [threading.Thread(target=run, args=(i,)) for i in range(32)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert errors == []
        assert len({r.release.release_id for r in results}) == 1
        assert len({r.release.payload for r in results}) == 1
        assert sorted(r.repeat for r in results) == [False] + [True] * 31
        assert ledger.get_dataset("d").spent_units == 100


def test_concurrent_retries_with_one_idempotency_key_are_charged_once(make_ledger_file):
    path = make_ledger_file(cap=10_000, grant=10_000)
    results = []
    with Ledger.open(path) as ledger:
        barrier = threading.Barrier(16)

        def run(i):
            barrier.wait()
            results.append(
                ledger.debit(
                    "spender",
                    "d",
                    "query",
                    idempotency_key="one retry key",
                    cost_units=100,
                    payload=str(i).encode(),
                    request=RequestInfo(request_id=str(i), rpc="RunQuery"),
                )
            )

        threads = [threading.Thread(target=run, args=(i,)) for i in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        # Charged once; every retry is told what the first call was told.
        assert ledger.get_dataset("d").spent_units == 100
        assert len({r.release.release_id for r in results}) == 1
        assert {(r.charged_units, r.remaining_units, r.repeat) for r in results} == {
            (100, 9_900, False)
        }

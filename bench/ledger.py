"""Ledger throughput: debits per second under contention, and lookup latency.

Usage: uv run python bench/ledger.py [--seconds 2] [--folder DIR]

Each debit is one `BEGIN IMMEDIATE` transaction with synchronous=FULL (an fsync of the WAL
per commit) that also appends its audit event. Threads share one `Ledger` (a pool of
SQLite connections); processes each open the same file. The file lives in a temporary
folder unless --folder names one (put it on the disk the server would use).
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import tempfile
import threading
import time
import uuid
from pathlib import Path

from dpgate_server.ledger import Ledger, RequestInfo
from dpgate_server.vocabulary.accounting import Accounting

OPERATOR = RequestInfo(request_id="bench", rpc="Bench")
BIG = 10**15


def make_ledger(path: Path) -> None:
    with Ledger.open_sqlite(path) as ledger:
        ledger.admin.create_dataset(
            "d", accounting=Accounting.PURE_DP, cap_units=BIG, reason="bench", request=OPERATOR
        )
        ledger.admin.create_requester(
            "spender", name="s", organisation="o", agreement="a", request=OPERATOR
        )
        ledger.admin.grant_allocation(
            "spender", "d", BIG, request=OPERATOR, purpose="testing", agreement="DSA-TEST"
        )


def debit_once(ledger: Ledger) -> None:
    key = uuid.uuid4().hex
    ledger.debit(
        "spender",
        "d",
        key,
        idempotency_key=key,
        cost_units=1_000,
        payload=b"x" * 200,
        request=RequestInfo(request_id=key, rpc="RunQuery", query_text="COUNT BY week"),
    )


def debit_loop(ledger: Ledger, stop_at: float) -> int:
    done = 0
    while time.monotonic() < stop_at:
        debit_once(ledger)
        done += 1
    return done


def threads_rate(path: Path, threads: int, seconds: float) -> float:
    counts = [0] * threads
    with Ledger.open_sqlite(path) as ledger:
        barrier = threading.Barrier(threads + 1)

        def run(index: int) -> None:
            barrier.wait()
            counts[index] = debit_loop(ledger, stop_at)

        workers = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
        for worker in workers:
            worker.start()
        stop_at = time.monotonic() + seconds
        started = time.monotonic()
        barrier.wait()
        for worker in workers:
            worker.join()
        elapsed = time.monotonic() - started
    return sum(counts) / elapsed


def process_main(path: str, start_at: float, seconds: float, out: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    with Ledger.open_sqlite(path) as ledger:
        time.sleep(max(0.0, start_at - time.time()))
        out.put(debit_loop(ledger, time.monotonic() + seconds))


def processes_rate(path: Path, processes: int, seconds: float) -> float:
    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    start_at = time.time() + 1.5
    workers = [
        context.Process(target=process_main, args=(str(path), start_at, seconds, out))
        for _ in range(processes)
    ]
    for worker in workers:
        worker.start()
    total = sum(out.get(timeout=120) for _ in workers)
    for worker in workers:
        worker.join()
    return total / seconds


def lookup_latencies(path: Path, samples: int) -> tuple[list[float], list[float]]:
    with Ledger.open_sqlite(path) as ledger:
        keys = [r.release_key for r in ledger.list_releases()]
        hits = []
        misses = []
        for index in range(samples):
            key = keys[(index * 7919) % len(keys)]
            started = time.perf_counter()
            found = ledger.lookup_release(key, "spender")
            hits.append(time.perf_counter() - started)
            assert found is not None
            started = time.perf_counter()
            ledger.lookup_release(uuid.uuid4().hex, "spender")
            misses.append(time.perf_counter() - started)
    return hits, misses


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--folder", type=Path, default=None)
    args = parser.parse_args()
    folder = args.folder or Path(tempfile.mkdtemp(prefix="dpgate-ledger-bench-"))
    path = folder / "ledger.db"
    make_ledger(path)
    print(f"ledger file: {path} (synchronous=FULL, WAL); {args.seconds:.1f} s per run")
    for threads in (1, 4, 16, 64):
        rate = threads_rate(path, threads, args.seconds)
        print(f"threads={threads:3d}   debits/s = {rate:8.0f}")
    for processes in (1, 2, 4):
        rate = processes_rate(path, processes, args.seconds)
        print(f"processes={processes:2d} debits/s = {rate:8.0f}")
    hits, misses = lookup_latencies(path, 5_000)
    with Ledger.open_sqlite(path) as ledger:
        head = ledger.head()
        started = time.perf_counter()
        verified = ledger.verify()
        verify_seconds = time.perf_counter() - started
        releases = len(ledger.list_releases())
    print(f"stored: {releases} releases, {head.count} audit events")
    for name, values in (("lookup hit ", hits), ("lookup miss", misses)):
        print(
            f"{name}: p50 = {percentile(values, 0.5) * 1e6:6.0f} us   "
            f"p95 = {percentile(values, 0.95) * 1e6:6.0f} us   "
            f"mean = {statistics.fmean(values) * 1e6:6.0f} us"
        )
    print(
        f"verify: {verified.checked} events in {verify_seconds:.2f} s "
        f"({verified.checked / verify_seconds:,.0f} events/s), ok={verified.ok}"
    )


if __name__ == "__main__":
    main()

"""Replicas on one PostgreSQL ledger: queries/s through 1, 2 and 3, and the failover gap.

Usage: uv run python bench/replicas.py [--practices 10] [--clients 6] [--seconds 15]
                                       [--workers 1] [--folder DIR]

Starts a throwaway PostgreSQL cluster (durable: fsync on), a small synthetic dataset and
three `dpgate-server serve` processes on them (each with --workers query workers; started
by tests/support/replicas.py, as the tests start them), then:
- queries/s: --clients threads, each a `Client` given the first 1, 2 or 3 replicas, run
  new queries (each a fresh release: computed, charged, recorded) for --seconds. On a
  2-core machine the replicas share the same CPUs: a sanity figure, not a scaling one.
- failover gap: the same load over all three; one replica is SIGKILLed mid-run. The gap
  is the longest time in which no client got an answer, around the kill, beside the
  longest such time before it; also each client's worst wait for one answer across the
  kill (its call in flight on the killed replica, the retry's backoff, the recomputation
  on another). Failed calls are counted (expected 0: `Client` retries UNAVAILABLE).
Everything started here is stopped and deleted at the end.
"""

from __future__ import annotations

import argparse
import itertools
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

from dpgate import Client, DpgateError, count
from dpgate_server.ledger import Ledger
from dpgate_server.ledger.local_postgres import LocalPostgres
from dpgate_server.synthetic.generator import ensure_demo_dataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests' replica launcher
from tests.support.replicas import Replicas, start_replicas


@dataclass
class Load:
    """Answers' times per client, failures, and a shared stop signal."""

    clients: int
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    answered: list[list[tuple[float, float]]] = field(default_factory=list)
    """Per client: (sent, answered) monotonic times of each answered call."""
    failures: list[str] = field(default_factory=list)
    made: int = 0

    def __post_init__(self) -> None:
        self.answered = [[] for _ in range(self.clients)]

    def epsilon(self) -> Decimal:
        with self.lock:
            self.made += 1
            return Decimal("0.01") + Decimal(self.made) / 1_000_000


def run_load(targets: list[str], token: str, dataset_id: str, load: Load) -> list[threading.Thread]:
    def client(index: int) -> None:
        with Client(targets, token=token) as connection:
            while not load.stop.is_set():
                query = count(dataset_id).where(status="DNA").by("month")
                sent = time.monotonic()
                try:
                    connection.query(query.epsilon(load.epsilon()))
                except DpgateError as error:
                    with load.lock:
                        load.failures.append(f"{type(error).__name__}: {error}")
                    continue
                load.answered[index].append((sent, time.monotonic()))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(load.clients)]
    for thread in threads:
        thread.start()
    return threads


def finish(load: Load, threads: list[threading.Thread]) -> None:
    load.stop.set()
    for thread in threads:
        thread.join()


def queries_per_second(targets: list[str], token: str, dataset_id: str, args) -> tuple[float, int]:  # type: ignore[no-untyped-def]
    load = Load(args.clients)
    threads = run_load(targets, token, dataset_id, load)
    time.sleep(args.seconds / 4)  # warm-up: workers' first queries read the data
    with load.lock:
        before = sum(len(a) for a in load.answered)
    started = time.monotonic()
    time.sleep(args.seconds)
    with load.lock:
        after = sum(len(a) for a in load.answered)
    elapsed = time.monotonic() - started
    finish(load, threads)
    return (after - before) / elapsed, len(load.failures)


def longest_silence(times: list[float], start: float, end: float) -> float:
    """The longest interval within [start, end] without an answer."""
    points = [start, *sorted(t for t in times if start < t < end), end]
    return max(b - a for a, b in itertools.pairwise(points))


def failover_gap(replicas: Replicas, token: str, dataset_id: str, args) -> None:  # type: ignore[no-untyped-def]
    load = Load(args.clients)
    threads = run_load(replicas.targets, token, dataset_id, load)
    time.sleep(args.seconds)
    killed_at = time.monotonic()
    replicas.kill(len(replicas.members) - 1)
    time.sleep(args.seconds)
    finish(load, threads)
    answers = [done for per_client in load.answered for _, done in per_client]
    start = min(sent for per_client in load.answered for sent, _ in per_client)
    warm = start + args.seconds / 3
    before = longest_silence(answers, warm, killed_at)
    around = longest_silence(answers, killed_at - 2.0, max(answers))
    waits = [
        done - sent
        for per_client in load.answered
        for sent, done in per_client
        if sent <= killed_at <= done
    ]
    normal = [
        done - sent for per_client in load.answered for sent, done in per_client if done < killed_at
    ]
    print(
        f"failover: longest time without any answer: {around * 1e3:.0f} ms around the kill"
        f" (before it: {before * 1e3:.0f} ms); calls in flight at the kill: {len(waits)},"
        f" their time to answer: max {max(waits, default=0) * 1e3:.0f} ms,"
        f" median {statistics.median(waits) * 1e3 if waits else 0:.0f} ms (a call's median"
        f" before: {statistics.median(normal) * 1e3:.0f} ms); failed calls:"
        f" {len(load.failures)}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--practices", type=int, default=10)
    parser.add_argument("--clients", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--folder", type=Path, default=None)
    args = parser.parse_args()
    folder = args.folder or Path(tempfile.mkdtemp(prefix="dpgate-replicas-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    version = ensure_demo_dataset(
        folder / "store", folder / "key", practices=args.practices, seed=7
    )
    cluster = LocalPostgres.start(durable=True)
    try:
        url = cluster.create_database("ledger")
        with start_replicas(
            3, url, folder / "store", folder / "replicas", version.dataset_id, workers=args.workers
        ) as replicas:
            _, token = replicas.new_analyst(epsilon=100_000, prefix="bench")
            print(
                f"{args.practices} practices of synthetic data; {args.clients} clients;"
                f" {args.workers} worker(s) per replica; nproc={os.cpu_count()};"
                f" load average {os.getloadavg()[0]:.2f}",
                flush=True,
            )
            for n in (1, 2, 3):
                rate, failed = queries_per_second(
                    replicas.targets[:n], token, version.dataset_id, args
                )
                print(f"replicas={n}: {rate:6.1f} queries/s (failed calls: {failed})", flush=True)
            failover_gap(replicas, token, version.dataset_id, args)
        with Ledger.open(url) as ledger:
            print(
                f"after the runs: verify ok={ledger.verify().ok}, reconcile"
                f" ok={ledger.reconcile().ok}; load average {os.getloadavg()[0]:.2f}",
                flush=True,
            )
    finally:
        cluster.destroy()
        if args.folder is None:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()

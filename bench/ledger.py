"""Ledger throughput and latency on SQLite and PostgreSQL, with 1, 16 and 64 clients.

Usage: uv run python bench/ledger.py [--seconds 2] [--clients 1,16,64]
                                     [--backends sqlite,postgresql] [--folder DIR]
                                     [--postgres-url postgresql://...]

A client is a thread sharing the process's one `Ledger`, as the server's RPC threads do.
For each backend and client count:
- debits/s: every client debits distinct queries for --seconds. Each debit is one
  serialised write transaction that checks the budget, records the release, the spend and
  its audit event, and commits durably (SQLite: BEGIN IMMEDIATE, group commit of the WAL fsync;
  PostgreSQL: the chain-head row lock, synchronous_commit=on, fsync on).
- lookup p50/p95: every client looks up stored releases (hits) for --seconds; the latency
  of each lookup, as the query path pays it before computing anything.

SQLite's file is in a temporary folder unless --folder names one. PostgreSQL is a
throwaway local cluster started here with durable settings (fsync on), unless
--postgres-url names a database (it must be empty; the bench creates its tables).
On a shared 2-core machine the figures are indicative only.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from dpgate_server.ledger import Ledger, RequestInfo
from dpgate_server.ledger.local_postgres import LocalPostgres
from dpgate_server.vocabulary.accounting import Accounting

OPERATOR = RequestInfo(request_id="bench", rpc="Bench")
BIG = 10**15
Opener = Callable[[int], Ledger]
"""Opens the backend's ledger for a given number of clients."""


def prepare(ledger: Ledger) -> None:
    ledger.admin.create_dataset(
        "d", accounting=Accounting.PURE_DP, cap_units=BIG, reason="bench", request=OPERATOR
    )
    ledger.admin.create_requester(
        "spender", name="s", organisation="o", agreement="a", request=OPERATOR
    )
    ledger.admin.grant_allocation(
        "spender", "d", BIG, request=OPERATOR, purpose="benchmark", agreement="DSA-BENCH"
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


def run_clients(clients: int, seconds: float, work: Callable[[int], list[float]]) -> float:
    """Run `work(index)` on `clients` threads at once; returns the elapsed seconds."""
    results: list[list[float]] = [[] for _ in range(clients)]
    barrier = threading.Barrier(clients + 1)

    def run(index: int) -> None:
        barrier.wait()
        results[index] = work(index)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.monotonic()
    for thread in threads:
        thread.join()
    return time.monotonic() - started


def debits_per_second(ledger: Ledger, clients: int, seconds: float) -> float:
    counts = [0] * clients

    def work(index: int) -> list[float]:
        stop_at = time.monotonic() + seconds
        while time.monotonic() < stop_at:
            debit_once(ledger)
            counts[index] += 1
        return []

    elapsed = run_clients(clients, seconds, work)
    return sum(counts) / elapsed


def lookup_latencies(ledger: Ledger, clients: int, seconds: float) -> list[float]:
    keys = [r.release_key for r in ledger.list_releases()][-5_000:]
    latencies: list[list[float]] = [[] for _ in range(clients)]

    def work(index: int) -> list[float]:
        stop_at = time.monotonic() + seconds
        mine = latencies[index]
        step = index * 7919
        while time.monotonic() < stop_at:
            key = keys[step % len(keys)]
            step += 1
            started = time.perf_counter()
            found = ledger.lookup_release(key, "spender")
            mine.append(time.perf_counter() - started)
            assert found is not None
        return mine

    run_clients(clients, seconds, work)
    return [value for values in latencies for value in values]


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def bench_backend(name: str, open_ledger: Opener, clients_list: list[int], seconds: float) -> None:
    with open_ledger(1) as ledger:
        prepare(ledger)
    for clients in clients_list:
        with open_ledger(clients) as ledger:
            rate = debits_per_second(ledger, clients, seconds)
            latencies = lookup_latencies(ledger, clients, seconds)
        print(
            f"{name:10s} clients={clients:3d}  debits/s = {rate:7.0f}   lookup"
            f" p50 = {percentile(latencies, 0.5) * 1e3:6.2f} ms"
            f"  p95 = {percentile(latencies, 0.95) * 1e3:6.2f} ms"
            f"  ({len(latencies)} lookups)",
            flush=True,
        )
    with open_ledger(1) as ledger:
        head = ledger.head()
        started = time.perf_counter()
        verified = ledger.verify()
        verify_seconds = time.perf_counter() - started
        reconciled = ledger.reconcile().ok
    print(
        f"{name:10s} after the runs: {head.count} audit events; verify ok={verified.ok}"
        f" in {verify_seconds:.2f} s ({verified.checked / verify_seconds:,.0f} events/s);"
        f" reconcile ok={reconciled}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--clients", default="1,16,64")
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--folder", type=Path, default=None)
    parser.add_argument("--postgres-url", default=None)
    args = parser.parse_args()
    clients_list = [int(c) for c in args.clients.split(",")]
    backends = args.backends.split(",")
    print(f"{args.seconds:.1f} s per measurement; clients are threads sharing one Ledger")
    if "sqlite" in backends:
        folder = args.folder or Path(tempfile.mkdtemp(prefix="dpgate-ledger-bench-"))
        path = folder / "ledger.db"

        def open_sqlite(clients: int) -> Ledger:
            return Ledger.open_sqlite(path)

        bench_backend("sqlite", open_sqlite, clients_list, args.seconds)
    if "postgresql" in backends:
        cluster = None
        url = args.postgres_url
        if url is None:
            cluster = LocalPostgres.start(durable=True)
            url = cluster.create_database("bench")
        try:

            def open_postgres(clients: int) -> Ledger:
                return Ledger.open_postgres(url, max_connections=max(clients, 1))

            bench_backend("postgresql", open_postgres, clients_list, args.seconds)
        finally:
            if cluster is not None:
                cluster.destroy()


if __name__ == "__main__":
    main()

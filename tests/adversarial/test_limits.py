"""Limits under attack: a burst of heavy queries, and a flood of unauthenticated calls.

Both against `server_b`: one worker, a wait queue of two, a 1 GiB worker memory cap.
"""

from __future__ import annotations

import contextlib
import re
import statistics
import threading
import time
from collections import Counter
from decimal import Decimal

import grpc
import psutil
import pytest

from dpgate import Client, DpgateError, OverloadedError, QuerySpec, count
from dpgate_server.ledger.ledger import Ledger
from dpgate_server.ledger.model import Outcome
from tests.adversarial.conftest import SERVER_B_QUEUE, SERVER_B_WORKER_MB, Figures
from tests.adversarial.helpers import SERVING, Server, health_status, scale, wait_for
from tests.adversarial.wire import METHODS, send

# One pytest-xdist unit: these modules share the session's two attacked servers.
pytestmark = pytest.mark.xdist_group("adversarial")


RSS_HEADROOM_MB = 128
"""The watchdog samples RSS every 0.1 s; the pool documents ~70 MB of overshoot."""


def heavy(dataset_id: str, i: int) -> QuerySpec:
    """~12,700 cells (practice x week x hour): about a second of a worker's time."""
    epsilon = Decimal("0.05") + Decimal(i) / 10**9
    return count(dataset_id).by("practice_code", "week", "hour").epsilon(epsilon)


def test_a_burst_of_heavy_queries_is_queued_or_overloaded_while_health_answers(
    server_b: Server, figures: Figures
) -> None:
    assert server_b.running is not None
    pool = server_b.running.pool
    workers = pool.settings.workers
    _, token = server_b.new_analyst(1_000, "heavy")
    burst = scale(12, 48)
    rejected_before = pool.stats().rejected
    outcomes: Counter[str] = Counter()
    hints: list[float] = []
    lock = threading.Lock()
    barrier = threading.Barrier(burst)
    done = threading.Event()
    samples: dict[str, list[float]] = {"health_s": [], "alive": [], "waiting": [], "rss_mb": []}
    health: Counter[int] = Counter()

    def ask(i: int) -> None:
        with Client(server_b.target, token=token, retries=0, timeout=120) as client:
            barrier.wait()
            try:
                client.query(heavy(server_b.dataset_id, i))
                outcome = "OK"
            except OverloadedError as busy:
                outcome = f"OVERLOADED ({busy.reason})"
                with lock:
                    hints.append(busy.retry_after or 0.0)
            except DpgateError as other:
                outcome = f"{other.code} ({other.reason})"
            with lock:
                outcomes[outcome] += 1

    def watch() -> None:
        while not done.is_set():
            began = time.perf_counter()
            health[health_status(server_b.target, timeout=10)] += 1
            samples["health_s"].append(time.perf_counter() - began)
            stats = pool.stats()
            samples["alive"].append(stats.alive)
            samples["waiting"].append(stats.waiting)
            for pid in stats.worker_pids:
                try:
                    samples["rss_mb"].append(psutil.Process(pid).memory_info().rss / 2**20)
                except psutil.Error:
                    continue
            time.sleep(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    threads = [threading.Thread(target=ask, args=(i,)) for i in range(burst)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    done.set()
    watcher.join(timeout=30)

    overloaded = outcomes["OVERLOADED (OVERLOADED)"]
    figures.add("limits: heavy queries at once", burst)
    figures.set("limits: heavy burst outcomes", dict(outcomes))
    figures.set(
        "limits: health during the burst",
        f"{sum(health.values())} checks, all SERVING: {set(health) == {SERVING}}, "
        f"median {1000 * statistics.median(samples['health_s']):.1f} ms, "
        f"max {1000 * max(samples['health_s']):.1f} ms",
    )
    figures.set(
        "limits: workers during the burst",
        f"alive <= {max(samples['alive'])} (of {workers}), queue <= {max(samples['waiting'])} "
        f"(of {SERVER_B_QUEUE}), worker RSS <= {max(samples['rss_mb'], default=0):.0f} MiB "
        f"(cap {SERVER_B_WORKER_MB} MiB)",
    )
    assert set(outcomes) <= {"OK", "OVERLOADED (OVERLOADED)"}
    assert outcomes["OK"] >= 1
    assert overloaded >= 1
    assert pool.stats().rejected - rejected_before == overloaded
    assert all(hint >= 1.0 for hint in hints)  # a usable retry hint, in seconds
    assert set(health) == {SERVING}
    assert max(samples["alive"]) <= workers
    assert max(samples["waiting"]) <= SERVER_B_QUEUE
    assert max(samples["rss_mb"], default=0) <= SERVER_B_WORKER_MB + RSS_HEADROOM_MB


def test_an_overloaded_query_retried_after_its_hint_is_answered_and_charged_once(
    server_b: Server,
) -> None:
    requester_id, token = server_b.new_analyst(1, "patient")
    _, blocker_token = server_b.new_analyst(1_000, "blocker")
    query = heavy(server_b.dataset_id, 10**6)
    blockers = [
        threading.Thread(target=_ask_quietly, args=(server_b, blocker_token, 10**6 + j))
        for j in range(1, 1 + SERVER_B_QUEUE + 2)
    ]
    assert server_b.running is not None
    pool = server_b.running.pool
    with Client(server_b.target, token=token, retries=10, timeout=300) as client:
        client.budget()  # connected before the queue fills, so the query arrives at once
        for thread in blockers:
            thread.start()
        full = wait_for(
            lambda: pool.stats().busy == 1 and pool.stats().waiting == SERVER_B_QUEUE,
            timeout=60,
            interval=0.005,
        )
        result = client.query(query, idempotency_key="retry me")
        for thread in blockers:
            thread.join(timeout=300)
    with server_b.ledger() as ledger:
        releases = ledger.list_releases(requester_id)
        events = [e for e in ledger.list_events(limit=10**7) if e.requester_id == requester_id]
    refusals = [e for e in events if e.outcome is Outcome.FAILED and e.detail == "OVERLOADED"]
    assert full
    assert refusals  # it was turned away at least once, then answered after the hint
    assert [r.release_id for r in releases] == [result.release_id]
    assert result.charged == Decimal("0.05") + Decimal(10**6) / 10**9


def _ask_quietly(server: Server, token: str, i: int) -> None:
    with (
        Client(server.target, token=token, retries=0, timeout=300) as client,
        contextlib.suppress(DpgateError),
    ):
        client.query(heavy(server.dataset_id, i))


def _chain_unauthenticated_counts(server: Server) -> int:
    """Chain every unauthenticated count the server holds in memory, the open window's too."""
    assert server.running is not None
    server.running.ledger.flush_unauthenticated(everything=True)
    with Ledger.open_sqlite(server.ledger_path) as ledger:
        return ledger.head().count


@pytest.mark.timeout(scale(300, 3_600))
def test_a_flood_of_unauthenticated_calls_adds_a_few_counted_audit_events(
    server_b: Server, figures: Figures
) -> None:
    calls = scale(3_000, 30_000)
    head = _chain_unauthenticated_counts(server_b)
    # (gRPC clients refuse to send non-ASCII metadata themselves, so none is tried here)
    credentials = ["", "dpg_" + "A" * 43, "not a token", "dpg_" + "%C3%A9" * 600]
    paths = sorted(p for p in METHODS if ".QueryService/" in p or ".AuditService/" in p)
    codes: Counter[str] = Counter()
    lock = threading.Lock()
    threads = 16
    began = time.monotonic()

    def flood(offset: int) -> None:
        seen: Counter[str] = Counter()
        with grpc.insecure_channel(server_b.target) as channel:
            for i in range(offset, calls, threads):
                token = credentials[i % len(credentials)]
                answer = send(channel, paths[i % len(paths)], b"", token, timeout=60)
                seen[answer.code.name] += 1
        with lock:
            codes.update(seen)

    workers = [threading.Thread(target=flood, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=600)
    minutes = (time.monotonic() - began) / 60
    _chain_unauthenticated_counts(server_b)
    with Ledger.open_sqlite(server_b.ledger_path) as ledger:
        events = ledger.list_events(after_seq=head, limit=10**7)
        assert ledger.verify().ok
    counted = sum(int(re.match(r"(\d+) ", e.detail).group(1)) for e in events)  # type: ignore[union-attr]
    figures.add("limits: unauthenticated calls", calls)
    figures.set(
        "limits: audit events for the unauthenticated flood",
        f"{len(events)} events counting {counted} calls over {minutes:.2f} min",
    )
    assert codes == Counter({"UNAUTHENTICATED": calls})
    assert all(e.outcome is Outcome.UNAUTHENTICATED for e in events)
    assert counted == calls  # aggregated, never dropped
    assert len(events) <= int(minutes) + 2  # one source: at most one event per minute window
    assert health_status(server_b.target) == SERVING

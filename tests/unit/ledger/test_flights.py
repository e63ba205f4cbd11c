"""Flight locks: one holder per release key across every storage of one ledger.

Two `Ledger`s opened on the same store stand for two server processes (on SQLite they
share the process's flight file; the replica tests cover separate processes).
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from dpgate_server.ledger.flights import Flight, flight_key
from tests.conftest import LedgerStore


def test_a_second_caller_waits_for_the_first_and_is_told_it_waited(
    ledger_store: LedgerStore,
) -> None:
    with ledger_store.open() as first, ledger_store.open() as second:
        holding, release = threading.Event(), threading.Event()
        outcomes: list[Flight] = []

        def hold() -> None:
            with first.single_flight("key-1", wait_s=5) as flight:
                outcomes.append(flight)
                holding.set()
                release.wait(10)

        holder = threading.Thread(target=hold)
        holder.start()
        assert holding.wait(10)
        with second.single_flight("key-1", wait_s=0.2) as refused:
            assert refused == Flight(held=False, waited=True)  # timed out: compute anyway
        with second.single_flight("key-2", wait_s=0.2) as other:
            assert other == Flight(held=True, waited=False)  # other keys never wait

        def release_soon() -> None:
            release.set()

        threading.Timer(0.3, release_soon).start()
        with second.single_flight("key-1", wait_s=10) as after:
            assert after == Flight(held=True, waited=True)
        holder.join(10)
        assert outcomes == [Flight(held=True, waited=False)]
        with second.single_flight("key-1", wait_s=0) as free:
            assert free == Flight(held=True, waited=False)  # let go when the block ended


def test_one_holder_at_a_time_among_many_threads(ledger_store: LedgerStore) -> None:
    with ledger_store.open() as a, ledger_store.open() as b:
        inside, most, lock = [0], [0], threading.Lock()

        def enter(open_flight: Callable[..., object]) -> None:
            with open_flight("shared", wait_s=30) as flight:  # type: ignore[attr-defined]
                assert flight.held
                with lock:
                    inside[0] += 1
                    most[0] = max(most[0], inside[0])
                threading.Event().wait(0.01)
                with lock:
                    inside[0] -= 1

        threads = [
            threading.Thread(target=enter, args=((a if i % 2 else b).single_flight,))
            for i in range(8)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert most == [1]


def test_keys_are_spread_over_64_bits() -> None:
    keys = {flight_key(f"q{i}") for i in range(10_000)}
    assert len(keys) == 10_000
    assert min(keys) < 0 < max(keys)

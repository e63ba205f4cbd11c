"""Group commit on SQLite: a write returns only after an fsync covering it; fsyncs are shared.

The storage is given a recording fsync which, before syncing, reads which requesters are
committed: what that fsync makes durable. Every write that returned must have been covered
by an fsync that finished before it returned; and writers committing while an fsync runs
share the next one instead of each waiting for its own.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from pathlib import Path

from dpgate_server.ledger import Ledger, RequestInfo
from dpgate_server.ledger.sqlite import SqliteStorage

OPERATOR = RequestInfo(request_id="op", rpc="Setup")


class RecordingFsync:
    """Records what each fsync covers (committed requesters), then calls the real fsync."""

    def __init__(self, database: Path, delay_s: float = 0.0) -> None:
        self._database = database
        self._delay_s = delay_s
        self._lock = threading.Lock()
        self._durable: set[str] = set()
        self.calls = 0

    def __call__(self, descriptor: int) -> None:
        # Read before syncing: the fsync covers at least what was committed when it began.
        with sqlite3.connect(self._database) as reader:
            committed = {row[0] for row in reader.execute("SELECT requester_id FROM requesters")}
        time.sleep(self._delay_s)
        os.fsync(descriptor)
        with self._lock:
            self._durable |= committed
            self.calls += 1

    def durable(self) -> set[str]:
        with self._lock:
            return set(self._durable)


def _writers(ledger: Ledger, recorder: RecordingFsync, threads: int, rounds: int) -> list[str]:
    """Concurrent writes (a requester each); the ones not durable when their call returned."""
    start = threading.Barrier(threads)
    not_durable: list[str] = []

    def write(index: int) -> None:
        start.wait()
        for round_ in range(rounds):
            name = f"r{index}-{round_}"
            ledger.admin.create_requester(
                name, name=name, organisation="org", agreement="DSA", request=OPERATOR
            )
            if name not in recorder.durable():
                not_durable.append(name)

    workers = [threading.Thread(target=write, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return not_durable


def _ledger(tmp_path: Path, delay_s: float = 0.0) -> tuple[Ledger, RecordingFsync]:
    path = tmp_path / "ledger.sqlite"
    recorder = RecordingFsync(path, delay_s)
    return Ledger(SqliteStorage(path, fsync=recorder)), recorder


def test_no_write_returns_before_an_fsync_covers_it(tmp_path: Path) -> None:
    ledger, recorder = _ledger(tmp_path)
    with ledger:
        assert _writers(ledger, recorder, threads=6, rounds=5) == []
    assert recorder.calls > 0


def test_writers_committing_during_an_fsync_share_the_next_one(tmp_path: Path) -> None:
    ledger, recorder = _ledger(tmp_path, delay_s=0.2)
    with ledger:
        before = recorder.calls
        assert _writers(ledger, recorder, threads=8, rounds=1) == []
    # Eight commits: the first waits for its own fsync, the seven committing meanwhile
    # share the next (a thread starved past a whole fsync would add one more).
    assert recorder.calls - before < 8

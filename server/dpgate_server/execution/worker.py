"""The body of a query worker process (runs in the child, started with "spawn").

A worker imports Polars, OpenDP and the engine once (the module imports below), says
`Ready`, then answers jobs one at a time until it reads `STOP` or its pipe closes. It
holds no state between jobs except the imports: each query opens its exact dataset version
afresh (versions are immutable, so a query keeps reading the version it was priced on
even after a newer one is published).

The worker never decides about budgets; it returns release bytes and the parent process
(the ledger) decides whether they may leave.
"""

from __future__ import annotations

import os
import signal
import sys
import time
import traceback
from multiprocessing.connection import Connection
from pathlib import Path

from dpgate_server.execution.messages import (
    STOP,
    Done,
    Failed,
    Job,
    Probe,
    QueryJob,
    Ready,
    Reply,
    refusal_of,
)
from dpgate_server.queries import engine
from dpgate_server.queries.errors import EngineError
from dpgate_server.store.store import DatasetStore


def main(conn: Connection, store_root: Path) -> None:
    """Serve jobs from `conn` until STOP or EOF (the process's target).

    SIGINT is ignored: a Ctrl-C reaches the whole process group, and the parent decides
    when workers end (it closes the pool, ending queries that are still running).
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    store = DatasetStore(store_root)
    conn.send(Ready(pid=os.getpid()))
    while True:
        try:
            job = conn.recv()
        except EOFError:
            return
        if job is STOP:
            return
        reply = answer(store, job)
        conn.send(reply)
        if isinstance(reply, Failed) and reply.fatal:
            return


def answer(store: DatasetStore, job: Job) -> Reply:
    """Run one job; never raises (except on errors while reporting an error)."""
    try:
        payload = run_query(store, job) if isinstance(job, QueryJob) else run_probe(job)
    except MemoryError:
        # The heap may be in any state: reply without formatting much, then exit.
        return Failed("MemoryError", "MemoryError", fatal=True)
    except Exception as exc:
        refused = refusal_of(exc)
        if refused is not None:
            return refused
        return Failed(type(exc).__name__, traceback.format_exc(), fatal=False)
    return Done(payload)


def run_query(store: DatasetStore, job: QueryJob) -> bytes:
    """Prepare and execute `job.query` on its exact version; the release payload.

    The caller priced the query (and looked its key up in the ledger) in its own process;
    a different key here would mean the engine is not deterministic in its keys, and the
    release would be stored under a key it does not answer, so it is refused.
    """
    version = store.open_version(job.dataset_id, job.version)
    prepared = engine.prepare(version, job.query, job.limits)
    if prepared.key != job.expected_key:
        raise EngineError(
            f"the worker priced the query with key {prepared.key}, the caller with "
            f"{job.expected_key}: release keys are not deterministic"
        )
    return engine.execute(version, prepared).to_bytes()


def run_probe(probe: Probe) -> bytes:
    """Allocate, hold, sleep and maybe fail as `probe` says; this worker's pid (or modules)."""
    held = b"\x01" * probe.allocate_bytes  # repeating a byte writes, so every page is resident
    if probe.sleep_s > 0:
        time.sleep(probe.sleep_s)
    if probe.fail_with is not None:
        raise RuntimeError(probe.fail_with)
    del held
    if probe.report_modules:
        return "\n".join(sorted(sys.modules)).encode("utf-8")
    return str(os.getpid()).encode("ascii")

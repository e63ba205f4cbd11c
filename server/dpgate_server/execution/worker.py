"""The body of a query worker process (runs in the child, started with "spawn").

A worker imports Polars, OpenDP and the engine once (the module imports below, then
`FIRST_QUERY_MODULES`), sets the process-wide engine switches once (`process_settings`),
says `Ready`, then answers jobs one at a time until it reads `STOP` or its pipe closes.
It holds no state between jobs except the imports: each query opens its exact dataset
version afresh (versions are immutable, so a query keeps reading the version it was priced
on even after a newer one is published) and runs the query as the caller prepared it.

The worker never decides about budgets; it returns release bytes and the parent process
(the ledger) decides whether they may leave.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import sys
import time
import traceback
from multiprocessing.connection import Connection
from pathlib import Path

from opendp.mod import GLOBAL_FEATURES

from dpgate_server.execution.messages import (
    STOP,
    Done,
    Failed,
    Job,
    Probe,
    ProbeReport,
    QueryJob,
    Ready,
    Reply,
    refusal_of,
)
from dpgate_server.queries import engine, process_settings
from dpgate_server.store.store import DatasetStore

FIRST_QUERY_MODULES = ("pyarrow", "pyarrow.compute", "opendp._data")
"""What the first query would otherwise import, loaded before `Ready` instead.

OpenDP imports these on first use, not with its modules: `opendp._data` when it first
converts a value back from its Rust core (building the plan does), and PyArrow when a
frame first crosses back as Arrow (every release: `summarize_polars_measurement`, and
Polars' `from_arrow` then imports `pyarrow.compute`). Loading them at start (about
0.08 CPU s) keeps that from the first requester after every start or restart: a worker that
says Ready answers at full speed. (`pyarrow.parquet`, for the cheapest count column, comes
with the engine.) A test checks that a fresh worker's first queries import nothing.
"""


def main(conn: Connection, store_root: Path) -> None:
    """Serve jobs from `conn` until STOP or EOF (the process's target).

    SIGINT is ignored: a Ctrl-C reaches the whole process group, and the parent decides
    when workers end (it closes the pool, ending queries that are still running).
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for name in FIRST_QUERY_MODULES:
        importlib.import_module(name)
    process_settings.configure_process()
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
    """Execute `job.prepared` on the version it was prepared for; the release payload."""
    query = job.prepared.query
    version = store.open_version(query.dataset_id, query.dataset_version)
    return engine.execute(version, job.prepared).to_bytes()


def run_probe(probe: Probe) -> bytes:
    """Allocate, hold, sleep and maybe fail as `probe` says; answer what it asks for."""
    held = b"\x01" * probe.allocate_bytes  # repeating a byte writes, so every page is resident
    if probe.sleep_s > 0:
        _hold(probe.sleep_s, probe.until_path)
    if probe.fail_with is not None:
        raise RuntimeError(probe.fail_with)
    del held
    if probe.report is ProbeReport.MODULES:
        return "\n".join(sorted(sys.modules)).encode("utf-8")
    if probe.report is ProbeReport.SETTINGS:
        settings = {
            "opendp_features": sorted(GLOBAL_FEATURES),
            "streaming": os.environ.get(process_settings.STREAMING_VARIABLE),
        }
        return json.dumps(settings).encode("utf-8")
    return str(os.getpid()).encode("ascii")


_GATE_POLL_S = 0.01


def _hold(sleep_s: float, until_path: str | None) -> None:
    """Sleep `sleep_s`, or less if a file appears at `until_path`."""
    if until_path is None:
        time.sleep(sleep_s)
        return
    deadline = time.monotonic() + sleep_s
    while not os.path.exists(until_path):
        left = deadline - time.monotonic()
        if left <= 0:
            return
        time.sleep(min(_GATE_POLL_S, left))

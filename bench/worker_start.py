"""Query worker start: seconds from launch to the worker's Ready, median of several starts.

Usage: uv run python bench/worker_start.py [--starts 9] [--store DIR]

The server's console script imports `dpgate_server.cli` as its `__main__`, and a spawned
child re-runs the parent's main module before it runs its target; this script imports the
CLI the same way, so the figure includes whatever that costs. Starts run one at a time
(as the pool's start does per worker); the machine's load is printed beside the figures.

The figure depends most on whether Python finds compiled bytecode: the output says which.
Where PYTHONDONTWRITEBYTECODE is set and the install has no .pyc files (uv installs none
unless asked: `--compile-bytecode`), every process compiles each module it imports, every
start. To measure with bytecode anyway: run this once under `env -u PYTHONDONTWRITEBYTECODE
PYTHONPYCACHEPREFIX=/tmp/pyc` (it writes the cache), then under `PYTHONPYCACHEPREFIX=/tmp/pyc`
alone (children inherit it).
"""

from __future__ import annotations

import argparse
import importlib.util
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psutil

import dpgate_server.cli  # noqa: F401  (what the dpgate-server console script imports)
from dpgate_server.execution.process import WorkerProcess

START_TIMEOUT_S = 120.0


def bytecode_note() -> str:
    """Whether imports here read compiled bytecode or compile every module from source.

    A start's import time depends on it more than on anything else: with
    PYTHONDONTWRITEBYTECODE set and an install without .pyc files (uv's default), every
    process compiles each module it imports, every time.
    """
    import polars  # noqa: PLC0415

    # Where Python looks for a module's bytecode (under PYTHONPYCACHEPREFIX if set).
    cached = Path(importlib.util.cache_from_source(polars.__file__ or ""))
    if not cached.exists():
        return "no bytecode cache: every import compiled from source"
    return f"bytecode cached ({sys.pycache_prefix or 'beside the sources'})"


def time_one_start(store_root: Path) -> tuple[float, float]:
    """Wall seconds to Ready, and the CPU seconds the worker used to get there.

    CPU time says what the start costs when other processes compete for the cores.
    """
    context = multiprocessing.get_context("spawn")
    started = time.perf_counter()
    worker = WorkerProcess.launch(context, store_root)
    try:
        worker.wait_ready(time.monotonic() + START_TIMEOUT_S)
        wall = time.perf_counter() - started
        cpu = psutil.Process(worker.pid).cpu_times()
        return wall, cpu.user + cpu.system
    finally:
        worker.stop(5.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--starts", type=int, default=9)
    parser.add_argument("--store", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        store_root = args.store or Path(folder)
        starts = [time_one_start(store_root) for _ in range(args.starts)]
    walls = [wall for wall, _ in starts]
    cpus = [cpu for _, cpu in starts]
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(
        f"worker start to Ready: median {statistics.median(walls):.2f} s wall "
        f"(min {min(walls):.2f}, max {max(walls):.2f}), median {statistics.median(cpus):.2f} "
        f"CPU s, over {len(starts)} starts ({os.cpu_count()} cores, load average {load};"
        f" {bytecode_note()})"
    )


if __name__ == "__main__":
    main()

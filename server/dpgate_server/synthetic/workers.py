"""Worker processes for the synthetic generators: how many, and how they start.

Shared by the dataset generator and the raw-extract writer, so both parallelise alike.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor

MAX_AUTO_WORKERS = 4


def auto_workers(tasks: int) -> int:
    """One worker per core, up to MAX_AUTO_WORKERS, never more than there are tasks."""
    return max(1, min(os.cpu_count() or 1, MAX_AUTO_WORKERS, tasks))


def worker_pool(workers: int) -> ProcessPoolExecutor:
    """A pool of spawned workers: forking a process whose Polars thread pool is running can
    deadlock the child."""
    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))

"""Disposing of a worker twice (as failure paths do) is harmless."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

from dpgate_server.execution.process import WorkerProcess


def test_dispose_twice_does_not_raise(tmp_path: Path) -> None:
    worker = WorkerProcess.launch(multiprocessing.get_context("spawn"), tmp_path)
    worker.dispose()
    worker.dispose()
    assert not worker.is_alive()

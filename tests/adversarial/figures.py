"""The adversarial suite's tally of what it tried and measured, shared across processes.

Tests add to a `Figures` kept in the run's stash. When the suite runs on several pytest
processes (pytest-xdist), each worker hands its tally to the controlling process at the
end (`to_json`/`merge_json`), which prints the totals once (tests/conftest.py).
"""

from __future__ import annotations

import json
import os
import threading
from collections import Counter
from pathlib import Path

import pytest

from tests.adversarial.helpers import FULL_RUN


class Figures:
    """Thread-safe tallies of what the suite tried and what it measured."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts: Counter[str] = Counter()
        self.values: dict[str, object] = {}

    def add(self, name: str, amount: int = 1) -> None:
        with self._lock:
            self.counts[name] += amount

    def set(self, name: str, value: object) -> None:
        with self._lock:
            self.values[name] = value

    def lines(self) -> list[str]:
        with self._lock:
            rows = [f"{k}: {v}" for k, v in sorted(self.counts.items())]
            rows += [f"{k}: {v}" for k, v in sorted(self.values.items())]
        return rows

    def as_dict(self) -> dict[str, object]:
        with self._lock:
            return {**self.counts, **self.values}

    def to_json(self) -> str:
        """The tally as text a worker process can send (values as plain JSON)."""
        with self._lock:
            return json.dumps({"counts": self.counts, "values": self.values}, default=str)

    def merge_json(self, text: str) -> None:
        """Add another process's tally: counts add up, measured values are kept as sent."""
        other = json.loads(text)
        with self._lock:
            self.counts.update(other["counts"])
            self.values.update(other["values"])


FIGURES_KEY = pytest.StashKey[Figures]()
FIGURES_OUTPUT = "dpgate_adversarial_figures"
"""The key of a worker's tally in pytest-xdist's workeroutput."""


def figures_of(config: pytest.Config) -> Figures:
    """The run's tally (made on first use)."""
    if FIGURES_KEY not in config.stash:
        config.stash[FIGURES_KEY] = Figures()
    return config.stash[FIGURES_KEY]


def report(config: pytest.Config, terminalreporter: pytest.TerminalReporter) -> None:
    """Print the run's tally, and write it to $DPGATE_ADVERSARIAL_FIGURES when that is set."""
    found = config.stash.get(FIGURES_KEY, None)
    if found is None:
        return
    mode = "full run (DPGATE_FULL_RUN=1)" if FULL_RUN else "bounded default run"
    terminalreporter.section(f"adversarial figures, {mode}")
    for line in found.lines():
        terminalreporter.write_line(line)
    target = os.environ.get("DPGATE_ADVERSARIAL_FIGURES")
    if target:
        data = {"full_run": FULL_RUN, **found.as_dict()}
        Path(target).write_text(json.dumps(data, indent=1, sort_keys=True, default=str))

"""How far a publish has got, for a progress display (stages, practices done, time left).

A publish reports each step it completes to an optional callback. What it reports is
public or operational only: the stage, how many practices (public keys) or working files
are done of how many, and an overall fraction from which a display estimates the time
left. Never a count of private rows.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum


class PublishStage(StrEnum):
    """The steps of a streaming publish, in order (publishing.py)."""

    READING = "reading"
    """Each practice's rows are read, opt-outs removed, and every row's rank hash is
    filed under its patient's bucket."""
    BOUNDING = "bounding"
    """Bucket by bucket, the cut of every patient over the bound is decided."""
    WRITING = "writing"
    """Practice by practice, the kept rows are written into the month files."""
    VERIFYING = "verifying"
    """The written files are checked: schema, months, rows per practice, the bound."""


_WEIGHTS: dict[PublishStage, float] = {
    PublishStage.READING: 0.25,
    PublishStage.BOUNDING: 0.10,
    PublishStage.WRITING: 0.45,
    PublishStage.VERIFYING: 0.20,
}
"""Share of a publish's time each stage takes (measured at demo scale), for `fraction`."""


@dataclass(frozen=True, slots=True)
class PublishProgress:
    """One step of a publish.

    Attributes:
        stage: the stage running.
        done: units of the stage finished.
        total: units the stage has.
        unit: what a unit is ("practices", "buckets" or "checks").
        fraction: an estimate of the whole publish done, 0 to 1.
        elapsed_s: seconds since the publish started.
    """

    stage: PublishStage
    done: int
    total: int
    unit: str
    fraction: float
    elapsed_s: float

    @property
    def seconds_left(self) -> float | None:
        """A naive estimate of the time left (None until something is done)."""
        if self.fraction <= 0:
            return None
        return self.elapsed_s * (1 - self.fraction) / self.fraction


ProgressCallback = Callable[[PublishProgress], None]


class ProgressReporter:
    """Turns "stage S: n of m done" into PublishProgress for a callback (or nothing)."""

    def __init__(self, callback: ProgressCallback | None) -> None:
        self._callback = callback
        self._started = time.monotonic()

    def report(self, stage: PublishStage, done: int, total: int, unit: str) -> None:
        if self._callback is None:
            return
        before = sum(w for s, w in _WEIGHTS.items() if list(PublishStage).index(s) < _index(stage))
        within = _WEIGHTS[stage] * (done / total if total > 0 else 1.0)
        self._callback(
            PublishProgress(
                stage=stage,
                done=done,
                total=total,
                unit=unit,
                fraction=min(1.0, before + within),
                elapsed_s=time.monotonic() - self._started,
            )
        )


def _index(stage: PublishStage) -> int:
    return list(PublishStage).index(stage)

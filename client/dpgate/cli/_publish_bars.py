"""A publish shown as one rich bar per stage, from the steps the server streams.

Each bar: the stage, units done of total (practices, buckets or checks), the stage's time,
and the server's estimate of the whole publish's time left (rich's own per-bar estimate
knows nothing of the stages still to come). Only what a `PublishStep` carries is shown:
never a count of rows. On a console that is not a terminal (a log), the bars' final state
is printed once at the end.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from dpgate._admin_types import PublishStep


class PublishBars:
    """Bars that follow a publish's steps; `show` each step, `finish` at the end."""

    def __init__(self, progress: Progress) -> None:
        self._progress = progress
        self._tasks: dict[str, TaskID] = {}

    def show(self, step: PublishStep) -> None:
        task = self._tasks.get(step.stage)
        if task is None:
            self.finish()  # a new stage: the earlier ones are over
            task = self._progress.add_task(step.stage, total=step.total, unit=step.unit, left="")
            self._tasks[step.stage] = task
        self._progress.update(
            task, completed=step.done, total=step.total, left=time_left(step.seconds_left)
        )

    def finish(self) -> None:
        """Stop the stages' clocks and clear their time left."""
        for task in self._tasks.values():
            self._progress.update(task, left="")
            self._progress.stop_task(task)


@contextmanager
def publish_bars(console: Console) -> Iterator[PublishBars]:
    """Bars on `console` for the duration of a publish."""
    progress = Progress(
        TextColumn("{task.description:<9}"),
        BarColumn(),
        TextColumn("{task.completed:.0f}/{task.total:.0f} {task.fields[unit]}"),
        TimeElapsedColumn(),
        TextColumn("{task.fields[left]}"),
        console=console,
        transient=False,
    )
    with progress:
        bars = PublishBars(progress)
        try:
            yield bars
        finally:
            bars.finish()


def time_left(seconds: float | None) -> str:
    """ "about 1:05 left", or "" while nothing is done to estimate from.

    Example:
        >>> time_left(65.4), time_left(None)
        ('about 1:05 left', '')
    """
    if seconds is None:
        return ""
    whole = max(0, round(seconds))
    return f"about {whole // 60}:{whole % 60:02d} left"

"""Progress of a synthetic-data run: practices done of total, rows/s, elapsed, time left.

The generators report through the small `GenerationProgress` protocol, so they stay free of
any display; `ProgressBar` is the rich bar the commands show on stderr. Counting rows is fine
here: the data is synthetic (the bulk commands for real extracts show bytes instead).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text


class GenerationProgress(Protocol):
    """Told as whole practices are written, and when the run moves to another stage."""

    def practices_done(self, practices: int, rows: int) -> None:
        """`practices` more practices are done, holding `rows` rows."""

    def stage(self, description: str) -> None:
        """The run moved on (e.g. to verifying what it wrote)."""


class NoProgress:
    """Reports nowhere (the library default)."""

    def practices_done(self, practices: int, rows: int) -> None:
        """Ignored."""

    def stage(self, description: str) -> None:
        """Ignored."""


class RowsPerSecondColumn(ProgressColumn):
    """Rows written per second of elapsed time (the task's `rows` field)."""

    def render(self, task: Task) -> Text:
        """The rate, or nothing before the first practice is done."""
        elapsed = task.elapsed or 0.0
        rows = int(task.fields.get("rows", 0))
        if elapsed <= 0 or rows == 0:
            return Text("", style="progress.data.speed")
        return Text(f"{rows / elapsed:,.0f} rows/s", style="progress.data.speed")


class ProgressBar:
    """A rich bar for one run: practices done of total, rows/s, elapsed, time left."""

    def __init__(self, progress: Progress, task: TaskID) -> None:
        self._progress = progress
        self._task = task

    def practices_done(self, practices: int, rows: int) -> None:
        """Advance the bar and the row count."""
        task = self._progress.tasks[self._task]
        rows_so_far = int(task.fields.get("rows", 0)) + rows
        self._progress.update(self._task, advance=practices, rows=rows_so_far)

    def stage(self, description: str) -> None:
        """Show the new stage as the bar's description."""
        self._progress.update(self._task, description=description)


@contextmanager
def progress_bar(description: str, practices: int) -> Iterator[ProgressBar]:
    """Show a bar on stderr for a run over `practices` practices while the block runs."""
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("practices"),
        MofNCompleteColumn(),
        RowsPerSecondColumn(),
        TimeElapsedColumn(),
        TextColumn("left"),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=False,
    )
    with progress:
        task = progress.add_task(description, total=practices, rows=0)
        yield ProgressBar(progress, task)

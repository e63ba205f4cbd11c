"""Work on a list of items a few at a time, never holding more than a few at once.

Bulk ingest holds each extract whole in memory while it is validated, so the number in
flight must be bounded (not the whole folder queued into an executor). Threads suffice:
Polars, zlib and hashlib's large updates release the GIL, and the single-threaded steps
of one item (a Python loop, a file's footer, an audit) overlap the parallel ones of another.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


def in_parallel(
    items: Sequence[Item], work: Callable[[Item], Result], jobs: int
) -> Iterator[tuple[Item, Result]]:
    """(item, work(item)) for every item, as each finishes, with at most `jobs` started
    and not yet yielded. An exception from `work` is raised here once the items already
    started have finished; no further item is started.
    """
    if jobs < 1:
        raise ValueError(f"jobs must be at least 1, not {jobs}")
    if jobs == 1:
        for item in items:
            yield item, work(item)
        return
    pending = iter(items)
    with ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="bounded-pool") as pool:
        running: dict[Future[Result], Item] = {}

        def start_next() -> None:
            for item in pending:
                running[pool.submit(work, item)] = item
                return

        for _ in range(jobs):
            start_next()
        while running:
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                item = running.pop(future)
                result = future.result()  # raises: the with block waits for the others
                yield item, result
                start_next()

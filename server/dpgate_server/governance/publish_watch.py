"""A publish on a thread of its own, its steps read as they happen, stoppable between steps.

A publish reports its steps to a callback on the thread that runs it (publish_progress.py).
A caller that must send each step somewhere while the publish runs (the streaming admin
RPC) runs it here instead: `steps()` yields each step as it is reported and ends when the
publish does; `result()` then gives the result or raises the publish's error.

`cancel()` asks the publish to stop: the next step it reports raises
`publish_cancelled()` inside the build, which discards its working folder like any other
failure (publishing.py), so nothing is published and no half-built version is left. A
cancel that comes after the last step (while the version is being sealed) is too late: the
publish completes, is audited as published, and `result()` returns it. Either way the
dataset ends with a whole version current, never a partial one.
"""

from __future__ import annotations

import contextvars
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from dpgate_server.governance.errors import GovernanceError
from dpgate_server.governance.publish_progress import ProgressCallback, PublishProgress
from dpgate_server.governance.publishing import PublishResult
from dpgate_server.vocabulary.errors import ErrorReason

Publish = Callable[[ProgressCallback], PublishResult]
"""A publish to run, given the callback that hears its steps (Governance.publish bound to
its dataset and request)."""


@dataclass(frozen=True, slots=True)
class _Ended:
    result: PublishResult | None
    error: BaseException | None


class PublishWatch:
    """One publish running on its own thread; read `steps()`, then `result()`."""

    def __init__(self, publish: Publish, name: str = "publish") -> None:
        self._publish = publish
        self._events: queue.SimpleQueue[PublishProgress | _Ended] = queue.SimpleQueue()
        self._cancelled = threading.Event()
        self._finished = threading.Event()
        self._ended: _Ended | None = None
        context = contextvars.copy_context()  # the caller's request id reaches its logs
        self._thread = threading.Thread(
            target=context.run, args=(self._run,), name=name, daemon=True
        )

    def start(self) -> PublishWatch:
        self._thread.start()
        return self

    def steps(self) -> Iterator[PublishProgress]:
        """Each step as the publish reports it; ends when the publish has ended."""
        while self._ended is None:
            event = self._events.get()
            if isinstance(event, _Ended):
                self._ended = event
                return
            yield event

    def result(self) -> PublishResult:
        """The published version (waits for the end); raises what the publish raised."""
        for _ in self.steps():
            pass
        self._thread.join()
        assert self._ended is not None
        if self._ended.error is not None:
            raise self._ended.error
        assert self._ended.result is not None
        return self._ended.result

    def cancel(self) -> None:
        """Stop the publish at its next step (safe from any thread, any number of times)."""
        self._cancelled.set()

    @property
    def finished(self) -> bool:
        """True once the publish has ended (published, refused or cancelled)."""
        return self._finished.is_set()

    def _report(self, step: PublishProgress) -> None:
        if self._cancelled.is_set():
            raise publish_cancelled()
        self._events.put(step)

    def _run(self) -> None:
        try:
            result = self._publish(self._report)
        except BaseException as exc:  # handed to the reader of `result`
            self._events.put(_Ended(None, exc))
        else:
            self._events.put(_Ended(result, None))
        finally:
            self._finished.set()


def publish_cancelled() -> GovernanceError:
    """The refusal of a publish its caller cancelled before it was sealed."""
    return GovernanceError(
        ErrorReason.PUBLISH_CANCELLED,
        "the publish was cancelled before the new version was sealed; it stopped at its "
        "next step, its working files were removed and nothing was published",
    )

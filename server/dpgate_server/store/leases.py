"""Reader leases: a version is deleted only when no query is reading it.

A query takes a lease on the version it reads for as long as it reads it; retention
(retention.py) deletes an old version only after taking that version's lease exclusively,
which it gets only when no reader holds one. The interface is two context managers, so it
can live in the ledger's database when several machines share one store
(`ledger/reader_leases.py`, for a PostgreSQL ledger). `FileReaderLeases` is the
one-machine implementation (every SQLite ledger's processes are on one machine): a shared
`flock` per reader on a lease file, an exclusive non-blocking one to retire. The kernel
releases a killed process's locks, so a crash never leaves a version pinned or unprotected.

Layout under the store root::

    <dataset_id>/leases/<version>.lease
"""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

from dpgate_server.store.store import DatasetStore, DatasetVersion
from dpgate_server.vocabulary.errors import DatasetNotFoundError

LEASES_DIR = "leases"
_OPEN_ATTEMPTS = 5
"""Times `reading_current` re-reads CURRENT when the version it found was just retired
(each retry means a newer version became current in between)."""


class ReaderLeases(Protocol):
    """Who is reading which version (one process: file locks; several hosts: the ledger)."""

    def hold(self, dataset_id: str, version: str) -> contextlib.AbstractContextManager[None]:
        """A lease on `version` for the duration of the block (waits while it is being
        retired; the caller then finds it gone)."""
        ...

    def retire(self, dataset_id: str, version: str) -> contextlib.AbstractContextManager[bool]:
        """True inside the block if nobody holds a lease on `version`: no new lease is
        granted until the block ends, so the caller may delete it there."""
        ...

    def close(self) -> None:
        """Let go of what the leases keep open (the server calls it when it stops)."""
        ...


class FileReaderLeases:
    """Leases as `flock`s on one file per version (every process on one machine)."""

    def __init__(self, store_root: Path) -> None:
        self._root = store_root

    @contextlib.contextmanager
    def hold(self, dataset_id: str, version: str) -> Iterator[None]:
        with self._path(dataset_id, version).open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_SH)
            yield

    @contextlib.contextmanager
    def retire(self, dataset_id: str, version: str) -> Iterator[bool]:
        path = self._path(dataset_id, version)
        with path.open("a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                # Unlinked while still locked: a reader that opened it earlier gets its
                # lease only after this block, then finds the version gone and retries.
                path.unlink(missing_ok=True)

    def close(self) -> None:
        """Nothing to close: each lease opens and closes its own file."""

    def _path(self, dataset_id: str, version: str) -> Path:
        folder = self._root / dataset_id / LEASES_DIR
        folder.mkdir(parents=True, exist_ok=True)
        return folder / f"{version}.lease"


@contextlib.contextmanager
def reading_current(
    store: DatasetStore,
    leases: ReaderLeases,
    dataset_id: str,
    open_version: Callable[[str, str], DatasetVersion] | None = None,
) -> Iterator[DatasetVersion]:
    """The current version of `dataset_id`, leased until the block ends.

    `open_version` (default `store.open_version`) opens a version by name once the lease is
    held; it raises DatasetNotFoundError for a version that is gone (a caller's cache of
    opened versions must check that the version is still there).

    Raises:
        DatasetNotFoundError: no such dataset (or it kept changing under us).
    """
    opener = store.open_version if open_version is None else open_version
    for _ in range(_OPEN_ATTEMPTS):
        name = store.current_name(dataset_id)
        with leases.hold(dataset_id, name):
            try:
                version = opener(dataset_id, name)
            except DatasetNotFoundError:
                continue  # retired between reading CURRENT and taking the lease
            yield version
            return
    raise DatasetNotFoundError(dataset_id)  # kept changing under us: practically never

"""Version retention: keep the newest N versions, delete older ones nobody is reading.

Disk is finite (a national version is several GB), so old versions go; but a query that
opened a version keeps reading it to the end, so a version is deleted only under its
exclusive reader lease (leases.py). A version still being read is left for the next sweep
(after the next publish, or the next start). Releases made on a deleted version stay in
the ledger: listing them and repeating them never needs the files.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from dpgate_server.store.leases import ReaderLeases
from dpgate_server.store.store import DatasetStore
from dpgate_server.vocabulary.errors import DatasetNotFoundError

_log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RetentionResult:
    """What a sweep did for one dataset."""

    dataset_id: str
    deleted: tuple[str, ...]
    in_use: tuple[str, ...]
    """Versions past the limit that a query is still reading (kept for now)."""


def retire_old_versions(
    store: DatasetStore, leases: ReaderLeases, dataset_id: str, keep: int
) -> RetentionResult:
    """Delete the versions of `dataset_id` older than its newest `keep` that no query reads.

    The current version is always kept (it is the newest unless a build died, which
    `DatasetStore.recover` cleans).
    """
    if keep < 1:
        raise ValueError("at least the current version must be kept")
    try:
        current = store.current_name(dataset_id)
    except DatasetNotFoundError:
        return RetentionResult(dataset_id, (), ())
    older = [v for v in store.versions(dataset_id) if v < current]
    candidates = older[: max(0, len(older) - (keep - 1))]
    deleted, in_use = [], []
    for version in candidates:
        with leases.retire(dataset_id, version) as free:
            if not free:
                in_use.append(version)
            elif store.remove_version(dataset_id, version):
                deleted.append(version)
    return RetentionResult(dataset_id, tuple(deleted), tuple(in_use))


def tidy_store(store: DatasetStore, leases: ReaderLeases, keep: int) -> None:
    """At start: remove what killed builds and deletions left (DatasetStore.recover), then
    delete versions past `keep` that no query reads; everything removed is logged."""
    for recovery in store.recover_all():
        if recovery.busy:
            _log.info("a version of %s is being built by another process", recovery.dataset_id)
        elif recovery.removed_anything:
            never_current = ", ".join(recovery.unpublished_versions) or "none"
            _log.warning(
                "removed what interrupted work left in %s: %d unfinished build(s), versions "
                "never made current: %s, %d interrupted deletion(s)",
                recovery.dataset_id,
                recovery.unfinished_builds,
                never_current,
                recovery.interrupted_deletions,
            )
    for dataset_id in store.dataset_ids():
        swept = retire_old_versions(store, leases, dataset_id, keep)
        if swept.deleted:
            _log.info("deleted old versions of %s: %s", dataset_id, ", ".join(swept.deleted))

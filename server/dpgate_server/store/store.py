"""The dataset store: immutable versions of Parquet files and an atomic current pointer.

Layout under the store root::

    <dataset_id>/
        CURRENT                      name of the current version (swapped with os.replace;
                                     with a shared pointer, its copy for offline tools)
        versions/v000001/
            manifest.json            files, hashes, the verified contribution bound
            metadata.json            public policy (DatasetMetadata)
            appointments/2024-12.parquet ...   one file a month, rows sorted by practice
            public/<table>.parquet   public tables (practices, calendar, category sets)
        staging/<random>/            a version being built; never read by queries
            work/                    its builder's scratch files (removed before sealing)
        trash/<random>/              a version being deleted (renamed here first)
    .<dataset_id>.lock               held while a version is built (`building`, `writer_lock`)

A version folder is never modified once its name is in CURRENT, so a query that opened
version N keeps reading consistent files while N+1 is published. A process killed while
building leaves a staging folder, a sealed folder not yet named in CURRENT, or a folder in
trash: none is ever read, and `recover` removes them at the next start.

Servers sharing a ledger (replicas) give the store a `VersionPointer` kept in the ledger's
database: then the pointer there is what is current, moved in one transaction by whoever
publishes, so every replica switches at the same moment. CURRENT is still written after it,
as a copy for tools that read the store alone; a CURRENT newer than the shared pointer (a
version published by such a tool, e.g. the demo generator) is adopted into it when read.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import json
import os
import secrets
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import polars as pl

from dpgate_server.durable import fsync_path, replace_text, write_synced
from dpgate_server.store.chosen_bounds import ChosenBoundsRecord
from dpgate_server.store.metadata import DatasetMetadata
from dpgate_server.store.period_bounds import PeriodBounds
from dpgate_server.store.publish_records import BiasFigure, PublishSpendRecord
from dpgate_server.vocabulary.errors import DatasetNotFoundError

APPOINTMENTS_DIR = "appointments"
PUBLIC_DIR = "public"
MANIFEST_FILE = "manifest.json"
METADATA_FILE = "metadata.json"
CURRENT_FILE = "CURRENT"
VERSIONS_DIR = "versions"
STAGING_DIR = "staging"
TRASH_DIR = "trash"
WORK_DIR = "work"


class ManifestError(ValueError):
    """A version's files do not match its manifest."""


class BuildInProgressError(RuntimeError):
    """Another process or thread is building a version of this dataset right now."""

    def __init__(self, dataset_id: str) -> None:
        super().__init__(f"a version of {dataset_id} is being built")
        self.dataset_id = dataset_id


@dataclass(frozen=True, slots=True)
class Recovery:
    """What `DatasetStore.recover` removed for one dataset (for the start-up log)."""

    dataset_id: str
    unfinished_builds: int = 0
    """Staging folders of builds that died."""
    unpublished_versions: tuple[str, ...] = field(default=())
    """Sealed version folders never named in CURRENT (a build killed at its last step)."""
    interrupted_deletions: int = 0
    """Trash folders of deletions that died."""
    busy: bool = False
    """A build was running, so nothing was touched."""

    @property
    def removed_anything(self) -> bool:
        return bool(
            self.unfinished_builds or self.unpublished_versions or self.interrupted_deletions
        )


@dataclass(frozen=True, slots=True)
class FileRecord:
    """One file of a version: its path relative to the version folder and its digest."""

    path: str
    sha256: str
    rows: int


@dataclass(frozen=True, slots=True)
class ContributionBound:
    """The publish-time contribution bound of a version and whether it was verified.

    Only a version whose bound is `verified` may be queried with a row-level privacy
    unit; the engine reads this record, never a guess about the files.
    """

    max_contributions: int
    verified: bool
    method: str
    """How the bound was enforced, e.g. "keyed-hash-k-per-patient"."""
    seed: int | None = None
    """The seed of the keyed-hash rank that chose each patient's rows (None: not a keyed
    cut), so the publish can be reproduced and checked."""
    period_bounds: PeriodBounds = field(default_factory=PeriodBounds)
    """The per-period bounds enforced and verified with `max_contributions` (empty: the
    total bound only). Only these may reach OpenDP as the version's bounds."""


@dataclass(frozen=True, slots=True)
class PublishRecords:
    """What a publish released besides the rows, for the new version's manifest."""

    spends: tuple[PublishSpendRecord, ...] = ()
    bias_figure: BiasFigure | None = None
    chosen_bounds: ChosenBoundsRecord | None = None


@dataclass(frozen=True, slots=True)
class VersionManifest:
    """What a version holds, as recorded when it was published."""

    dataset_id: str
    version: str
    created_at: str
    appointment_files: tuple[FileRecord, ...]
    public_files: tuple[FileRecord, ...]
    bound: ContributionBound | None
    source: dict[str, Any]
    """How the rows were produced (generator seed and scale, or the ingest batch)."""
    publish_spends: tuple[PublishSpendRecord, ...] = ()
    """Spends the publish declared for DP statistics of this version, charged or not."""
    bias_figure: BiasFigure | None = None
    """The DP count of patients who lost rows to each bound, released once with the
    version (or why not); None for a version whose publish never considered one (the
    generator's, or one published before the figure existed)."""
    chosen_bounds: ChosenBoundsRecord | None = None
    """Bounds the publish was asked to choose privately: the values chosen and their
    spend, or why the policy's stood; None when it was not asked."""

    def to_json(self) -> str:
        return json.dumps(_manifest_to_dict(self), sort_keys=True, indent=1)

    @staticmethod
    def from_json(text: str) -> VersionManifest:
        return _manifest_from_dict(json.loads(text))


@dataclass(frozen=True, slots=True)
class DatasetVersion:
    """An opened, immutable dataset version."""

    path: Path
    manifest: VersionManifest
    metadata: DatasetMetadata

    @property
    def dataset_id(self) -> str:
        return self.manifest.dataset_id

    @property
    def version(self) -> str:
        return self.manifest.version

    def appointment_paths(self) -> list[Path]:
        """The month files, in month order."""
        return [self.path / rec.path for rec in self.manifest.appointment_files]

    def scan_appointments(self) -> pl.LazyFrame:
        """A lazy scan of the private table (a path-based plan, cheap to serialize)."""
        return pl.scan_parquet([str(p) for p in self.appointment_paths()])

    def public_table_path(self, name: str) -> Path:
        """Path of a public table's Parquet file; raises KeyError if the version has none."""
        for rec in self.manifest.public_files:
            if Path(rec.path).stem == name:
                return self.path / rec.path
        raise KeyError(f"version {self.version} has no public table {name!r}")

    def scan_public_table(self, name: str) -> pl.LazyFrame:
        return pl.scan_parquet(self.public_table_path(name))

    def verify_files(self) -> None:
        """Recompute every file's digest; raise ManifestError on the first mismatch."""
        for rec in (*self.manifest.appointment_files, *self.manifest.public_files):
            actual = sha256_of(self.path / rec.path)
            if actual != rec.sha256:
                raise ManifestError(f"{rec.path}: digest {actual} does not match the manifest")


class VersionBuilder:
    """Collects a new version's files in a staging folder until `DatasetStore.publish`."""

    def __init__(self, staging: Path, dataset_id: str, metadata: DatasetMetadata) -> None:
        self.staging = staging
        self.dataset_id = dataset_id
        self.metadata = metadata
        (staging / APPOINTMENTS_DIR).mkdir(parents=True)
        (staging / PUBLIC_DIR).mkdir()

    def appointments_path(self, month: str) -> Path:
        """Where to write the appointments of `month` ("YYYY-MM")."""
        dt.date.fromisoformat(f"{month}-01")  # refuses anything that is not a month
        return self.staging / APPOINTMENTS_DIR / f"{month}.parquet"

    def public_table_path(self, name: str) -> Path:
        """Where to write the public table `name`."""
        if not name.isidentifier():
            raise ValueError(f"public table name {name!r} must be an identifier")
        return self.staging / PUBLIC_DIR / f"{name}.parquet"

    @property
    def work_dir(self) -> Path:
        """Scratch space for the build, on the store's filesystem (so files can be linked
        or renamed in); removed when the version is sealed or discarded."""
        path = self.staging / WORK_DIR
        path.mkdir(exist_ok=True)
        return path

    def discard(self) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)


class VersionPointer(Protocol):
    """Where the current version of each dataset is kept when several servers share it."""

    def current_version(self, dataset_id: str) -> str | None: ...
    def current_versions(self) -> dict[str, str]: ...
    def advance_current_version(self, dataset_id: str, version: str) -> str:
        """Make `version` current unless a newer one is; returns the current one."""
        ...


class DatasetStore:
    """Versions of every dataset under one root folder."""

    def __init__(self, root: Path, pointer: VersionPointer | None = None) -> None:
        self.root = root
        self._pointer = pointer

    def dataset_ids(self) -> list[str]:
        """Ids of datasets that have a current version, sorted."""
        found = set(self._pointer.current_versions()) if self._pointer is not None else set()
        if self.root.exists():
            found.update(p.name for p in self.root.iterdir() if (p / CURRENT_FILE).is_file())
        return sorted(found)

    def current(self, dataset_id: str) -> DatasetVersion:
        """Open the current version of `dataset_id`."""
        return self.open_version(dataset_id, self.current_name(dataset_id))

    def current_name(self, dataset_id: str) -> str:
        """The name of the current version of `dataset_id` (without opening it)."""
        if not _is_safe_name(dataset_id):
            raise DatasetNotFoundError(dataset_id)
        try:
            in_file: str | None = (self.root / dataset_id / CURRENT_FILE).read_text().strip()
        except FileNotFoundError:
            in_file = None
        if self._pointer is not None:
            shared = self._pointer.current_version(dataset_id)
            if in_file is not None and (shared is None or in_file > shared):
                shared = self._pointer.advance_current_version(dataset_id, in_file)
            in_file = shared
        if not in_file:
            raise DatasetNotFoundError(dataset_id)
        return in_file

    def open_version(self, dataset_id: str, version: str) -> DatasetVersion:
        """Open a specific version (for a query that must keep reading it)."""
        if not (_is_safe_name(dataset_id) and _is_safe_name(version)):
            raise DatasetNotFoundError(dataset_id, version)
        path = self.root / dataset_id / VERSIONS_DIR / version
        try:
            manifest = VersionManifest.from_json((path / MANIFEST_FILE).read_text())
            metadata = DatasetMetadata.from_json((path / METADATA_FILE).read_text())
        except FileNotFoundError:
            raise DatasetNotFoundError(dataset_id, version) from None
        return DatasetVersion(path=path, manifest=manifest, metadata=metadata)

    def versions(self, dataset_id: str) -> list[str]:
        folder = self.root / dataset_id / VERSIONS_DIR
        return sorted(p.name for p in folder.iterdir()) if folder.exists() else []

    def next_version_name(self, dataset_id: str) -> str:
        """The name the next `publish` of `dataset_id` gives its version (stable while the
        caller holds the dataset's build lock: only a build names a version)."""
        if not _is_safe_name(dataset_id):
            raise ValueError(f"dataset id {dataset_id!r} must be a plain name")
        return _next_version_name(self.versions(dataset_id))

    @staticmethod
    def names_before(version: str) -> list[str]:
        """Every name a version published before `version` had, retired ones included.

        Versions are numbered in publishing order (`v000001`, `v000002`, ...) and a number
        is never reused for a version that was current, so the names before `v000004` are
        `v000001` to `v000003`, whether or not their files are still kept. Oldest first;
        empty for a name outside the numbering.
        """
        number = _version_number(version)
        return [_version_name(n) for n in range(1, number or 1)]

    def begin_version(self, metadata: DatasetMetadata) -> VersionBuilder:
        """Start building the next version of `metadata.dataset_id` in a staging folder.

        Hold `building(dataset_id)` around the whole build: `recover` removes the staging
        folders of any dataset whose build lock is free.
        """
        if not _is_safe_name(metadata.dataset_id):
            raise ValueError(f"dataset id {metadata.dataset_id!r} must be a plain name")
        staging = self.root / metadata.dataset_id / STAGING_DIR / secrets.token_hex(8)
        return VersionBuilder(staging, metadata.dataset_id, metadata)

    @contextlib.contextmanager
    def writer_lock(self, dataset_id: str) -> Iterator[None]:
        """Hold the lock of `dataset_id`'s writers, across processes, waiting for it: the
        generator and publishing take it, so a demo start never races a publish."""
        with self.building(dataset_id, wait=True):
            yield

    @contextlib.contextmanager
    def building(self, dataset_id: str, *, wait: bool = False) -> Iterator[None]:
        """Hold the dataset's build lock (one build at a time, across processes).

        Raises:
            BuildInProgressError: another build holds it (only when `wait` is False).
        """
        if not _is_safe_name(dataset_id):
            raise ValueError(f"dataset id {dataset_id!r} must be a plain name")
        self.root.mkdir(parents=True, exist_ok=True)
        with (self.root / f".{dataset_id}.lock").open("a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                raise BuildInProgressError(dataset_id) from None
            yield

    def recover(self, dataset_id: str) -> Recovery:
        """Remove what killed builds and deletions left behind; never touches a live build.

        Unfinished staging folders, sealed versions newer than CURRENT (or any version of a
        dataset without CURRENT) and interrupted deletions are removed, while holding the
        build lock; if a build holds it, nothing is touched (`busy`).
        """
        try:
            with self.building(dataset_id):
                return self._recover_locked(dataset_id)
        except BuildInProgressError:
            return Recovery(dataset_id, busy=True)

    def recover_all(self) -> list[Recovery]:
        """`recover` for every dataset folder under the root."""
        if not self.root.is_dir():
            return []
        folders = sorted(p.name for p in self.root.iterdir() if p.is_dir())
        return [self.recover(name) for name in folders if _is_safe_name(name)]

    def remove_version(self, dataset_id: str, version: str) -> bool:
        """Delete a version that is not current; True if it existed.

        The folder is renamed into trash first (one atomic step: the version disappears
        whole), then deleted; a crash in between leaves only trash for `recover`.
        Callers make sure no query reads it (retention.retire_old_versions).
        """
        if not (_is_safe_name(dataset_id) and _is_safe_name(version)):
            raise ValueError("dataset and version names must be plain names")
        try:
            if self.current_name(dataset_id) == version:
                raise ValueError(f"{dataset_id}/{version} is the current version")
        except DatasetNotFoundError:
            pass
        folder = self.root / dataset_id / VERSIONS_DIR / version
        trash = self.root / dataset_id / TRASH_DIR / f"{version}-{secrets.token_hex(4)}"
        trash.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(folder, trash)
        except FileNotFoundError:
            return False
        fsync_path(folder.parent)
        shutil.rmtree(trash, ignore_errors=True)
        return True

    def _recover_locked(self, dataset_id: str) -> Recovery:
        dataset_dir = self.root / dataset_id
        builds = _remove_children(dataset_dir / STAGING_DIR)
        deletions = _remove_children(dataset_dir / TRASH_DIR)
        try:
            current: str | None = self.current_name(dataset_id)
        except DatasetNotFoundError:
            current = None
        orphans = tuple(v for v in self.versions(dataset_id) if current is None or v > current)
        for version in orphans:
            trash = dataset_dir / TRASH_DIR / f"{version}-{secrets.token_hex(4)}"
            trash.parent.mkdir(parents=True, exist_ok=True)
            os.replace(dataset_dir / VERSIONS_DIR / version, trash)
            shutil.rmtree(trash, ignore_errors=True)
        return Recovery(dataset_id, builds, orphans, deletions)

    def publish(
        self,
        builder: VersionBuilder,
        bound: ContributionBound | None,
        source: dict[str, Any],
        records: PublishRecords | None = None,
        *,
        expected_version: str | None = None,
    ) -> DatasetVersion:
        """Seal the staged files into a new version and make it current, atomically.

        The manifest (with every file's digest) and metadata are written and fsynced,
        the staging folder is renamed into `versions/`, then CURRENT is replaced in one
        `os.replace` (with a shared pointer: the pointer is moved in the ledger's database,
        then CURRENT is copied). A crash at any point leaves the previous version current.

        `records` (what the publish released besides the rows) go into the manifest; with
        `expected_version`, a version that would get another name is refused (the records
        were charged for that name) and nothing is published.
        """
        dataset_dir = self.root / builder.dataset_id
        (dataset_dir / VERSIONS_DIR).mkdir(parents=True, exist_ok=True)
        shutil.rmtree(builder.staging / WORK_DIR, ignore_errors=True)
        version = _next_version_name(self.versions(builder.dataset_id))
        if expected_version is not None and version != expected_version:
            raise RuntimeError(
                f"the version would be {version}, not {expected_version} as its records say"
            )
        records = records or PublishRecords()
        manifest = VersionManifest(
            dataset_id=builder.dataset_id,
            version=version,
            created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            appointment_files=tuple(_records(builder.staging, APPOINTMENTS_DIR)),
            public_files=tuple(_records(builder.staging, PUBLIC_DIR)),
            bound=bound,
            source=source,
            publish_spends=records.spends,
            bias_figure=records.bias_figure,
            chosen_bounds=records.chosen_bounds,
        )
        write_synced(builder.staging / METADATA_FILE, builder.metadata.to_json())
        write_synced(builder.staging / MANIFEST_FILE, manifest.to_json())
        final = dataset_dir / VERSIONS_DIR / version
        os.replace(builder.staging, final)
        try:
            fsync_path(final.parent)
            if self._pointer is not None:  # the commit point, for every server at once
                self._pointer.advance_current_version(builder.dataset_id, version)
            else:
                replace_text(dataset_dir / CURRENT_FILE, version)
        except BaseException:
            # Not current: take the sealed folder away again, so no listing ever shows it.
            trash = dataset_dir / TRASH_DIR / f"{version}-{secrets.token_hex(4)}"
            trash.parent.mkdir(parents=True, exist_ok=True)
            os.replace(final, trash)
            shutil.rmtree(trash, ignore_errors=True)
            raise
        if self._pointer is not None:  # the copy for tools that read the store alone
            replace_text(dataset_dir / CURRENT_FILE, version)
        return self.open_version(builder.dataset_id, version)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _records(staging: Path, sub: str) -> Iterator[FileRecord]:
    for file in sorted((staging / sub).glob("*.parquet")):
        rows = pl.scan_parquet(file).select(pl.len()).collect().item()
        yield FileRecord(path=f"{sub}/{file.name}", sha256=sha256_of(file), rows=int(rows))


def _remove_children(folder: Path) -> int:
    """Delete every entry of `folder`; returns how many there were."""
    if not folder.is_dir():
        return 0
    children = list(folder.iterdir())
    for child in children:
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)
    return len(children)


def _next_version_name(existing: list[str]) -> str:
    numbers = [n for n in map(_version_number, existing) if n is not None]
    return _version_name(max(numbers, default=0) + 1)


def _version_number(name: str) -> int | None:
    """The publishing number in a version's name (`v000003` -> 3), None if it has none."""
    return int(name[1:]) if name.startswith("v") and name[1:].isdigit() else None


def _version_name(number: int) -> str:
    return f"v{number:06d}"


def _is_safe_name(name: str) -> bool:
    """Ids become folder names: allow letters, digits, '_' and '-' only."""
    return bool(name) and len(name) <= 64 and all(c.isalnum() or c in "_-" for c in name)


def _manifest_to_dict(m: VersionManifest) -> dict[str, Any]:
    def files(records: tuple[FileRecord, ...]) -> list[dict[str, Any]]:
        return [{"path": r.path, "sha256": r.sha256, "rows": r.rows} for r in records]

    raw: dict[str, Any] = {
        "dataset_id": m.dataset_id,
        "version": m.version,
        "created_at": m.created_at,
        "appointment_files": files(m.appointment_files),
        "public_files": files(m.public_files),
        "bound": None if m.bound is None else _bound_to_dict(m.bound),
        "source": m.source,
    }
    if m.publish_spends:  # absent for versions that spent nothing at publish, as before
        raw["publish_spends"] = [s.to_dict() for s in m.publish_spends]
    if m.bias_figure is not None:
        raw["bias_figure"] = m.bias_figure.to_dict()
    if m.chosen_bounds is not None:
        raw["chosen_bounds"] = m.chosen_bounds.to_dict()
    return raw


def _bound_to_dict(bound: ContributionBound) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "max_contributions": bound.max_contributions,
        "verified": bound.verified,
        "method": bound.method,
    }
    if bound.seed is not None:
        raw["seed"] = bound.seed
    if bound.period_bounds:
        raw["period_bounds"] = bound.period_bounds.to_dict()
    return raw


def _manifest_from_dict(raw: dict[str, Any]) -> VersionManifest:
    def files(items: list[dict[str, Any]]) -> tuple[FileRecord, ...]:
        return tuple(FileRecord(i["path"], i["sha256"], int(i["rows"])) for i in items)

    bound = raw.get("bound")
    return VersionManifest(
        dataset_id=raw["dataset_id"],
        version=raw["version"],
        created_at=raw["created_at"],
        appointment_files=files(raw["appointment_files"]),
        public_files=files(raw["public_files"]),
        bound=None
        if bound is None
        else ContributionBound(
            max_contributions=int(bound["max_contributions"]),
            verified=bool(bound["verified"]),
            method=str(bound["method"]),
            seed=None if bound.get("seed") is None else int(bound["seed"]),
            period_bounds=PeriodBounds.from_dict(bound.get("period_bounds")),
        ),
        source=dict(raw.get("source", {})),
        publish_spends=tuple(
            PublishSpendRecord.from_dict(s) for s in raw.get("publish_spends", ())
        ),
        bias_figure=None
        if raw.get("bias_figure") is None
        else BiasFigure.from_dict(raw["bias_figure"]),
        chosen_bounds=None
        if raw.get("chosen_bounds") is None
        else ChosenBoundsRecord.from_dict(raw["chosen_bounds"]),
    )

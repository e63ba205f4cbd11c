"""The catalog: what requesters may learn about datasets without spending anything.

Only public metadata and public tables pass through here. The private appointments
table is never read by this module, so nothing it returns can depend on a patient.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from dpgate_server.store.metadata import KeyValue
from dpgate_server.store.publish_records import BiasFigure
from dpgate_server.store.store import DatasetStore, DatasetVersion
from dpgate_server.vocabulary.errors import DatasetNotFoundError, DomainError, ErrorReason


class UnknownPublicTableError(DomainError, LookupError):
    """The dataset publishes no table of that name."""

    reason = ErrorReason.TABLE_NOT_FOUND

    def __init__(self, dataset_id: str, table: str, available: tuple[str, ...]) -> None:
        super().__init__(
            f"dataset {dataset_id!r} has no public table {table!r}; "
            f"available: {', '.join(available) or 'none'}",
            {"dataset_id": dataset_id, "table": table},
        )


@dataclass(frozen=True, slots=True)
class PublicTableChunk:
    """A batch of a public table's rows; `columns` names the values of each row."""

    columns: tuple[str, ...]
    rows: tuple[tuple[KeyValue | None, ...], ...]


_UNREAD = object()
_FIGURES_KEPT = 256
"""Versions whose bias figure the catalog keeps in memory (a few hundred bytes each)."""


class Catalog:
    """Read-only view of the store's current versions."""

    def __init__(self, store: DatasetStore) -> None:
        self._store = store
        self._figures: dict[tuple[str, str], BiasFigure | None] = {}

    def bias_figure(self, dataset_id: str, version: str) -> BiasFigure | None:
        """The bias figure a version's manifest recorded at publish (None: it records
        none, or the version is no longer kept). Read once per version and kept: a version
        never changes, and the figure is never recomputed."""
        key = (dataset_id, version)
        known = self._figures.get(key, _UNREAD)  # one lookup: another thread may clear
        if known is not _UNREAD:
            return known  # type: ignore[return-value]
        try:
            figure = self._store.open_version(dataset_id, version).manifest.bias_figure
        except DatasetNotFoundError:
            return None
        if len(self._figures) >= _FIGURES_KEPT:
            self._figures.clear()
        self._figures[key] = figure
        return figure

    def current_versions(self) -> list[DatasetVersion]:
        """The current version of every dataset, by dataset id."""
        versions = []
        for dataset_id in self._store.dataset_ids():
            try:
                versions.append(self._store.current(dataset_id))
            except DatasetNotFoundError:  # removed between listing and opening
                continue
        return versions

    def current(self, dataset_id: str) -> DatasetVersion:
        """The current version of `dataset_id`; raises DatasetNotFoundError."""
        return self._store.current(dataset_id)

    def public_tables(self, version: DatasetVersion) -> list[tuple[str, tuple[str, ...]]]:
        """Names and column names of the version's public tables."""
        tables = []
        for name in version.metadata.public_tables:
            schema = version.scan_public_table(name).collect_schema()
            tables.append((name, tuple(schema.names())))
        return tables

    def read_public_table(
        self, dataset_id: str, table: str, batch_rows: int = 2000
    ) -> Iterator[PublicTableChunk]:
        """Stream a public table in batches, so no message nears the size limit."""
        version = self.current(dataset_id)
        if table not in version.metadata.public_tables:
            raise UnknownPublicTableError(dataset_id, table, version.metadata.public_tables)
        frame = version.scan_public_table(table).collect()
        columns = tuple(frame.columns)
        for start in range(0, max(frame.height, 1), batch_rows):
            batch = frame.slice(start, batch_rows)
            yield PublicTableChunk(columns=columns, rows=tuple(batch.iter_rows()))

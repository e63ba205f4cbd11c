"""The figures of the public pages, read from the ledger, the dataset store and the heads.

Built from the same transparency report the auditors export (so the page and the export
always agree), plus what the report leaves out and the public may see: the purpose and
agreement a release was asked under, the question in words, and the number of cells.
Nothing here reads a released value except to count cells.
"""

from __future__ import annotations

import datetime as dt
import threading
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from dpgate_server.ledger.ledger import Ledger
from dpgate_server.ledger.model import AuditEvent, Outcome
from dpgate_server.ledger.transparency import TransparencyReport
from dpgate_server.queries.model import Release
from dpgate_server.signed_heads import HeadPublisher, SignedHead
from dpgate_server.spend import plain, units_to_decimal
from dpgate_server.store.store import DatasetStore
from dpgate_server.web.charts import Point, Series
from dpgate_server.web.words import column_words, describe


def amount_text(measure: str, units: int) -> str:
    """ "epsilon 0.5": an exact decimal with its measure, never raw units."""
    return f"{measure} {plain(units_to_decimal(units))}"


@dataclass(frozen=True, slots=True)
class ReleaseRow:
    """One answered query as the public page lists it."""

    seq: int
    at: dt.datetime
    purpose: str
    agreement: str
    organisation: str
    dataset_id: str
    dataset_version: str
    question: str
    measure: str
    spend_units: int
    release_id: str
    repeat: bool

    @property
    def spend(self) -> str:
        return amount_text(self.measure, self.spend_units)

    def matches(self, text: str) -> bool:
        """Whether `text` (lower case) occurs in what the row shows."""
        shown = (self.purpose, self.agreement, self.dataset_id, self.question, self.organisation)
        return any(text in part.lower() for part in shown)


@dataclass(frozen=True, slots=True)
class DatasetSpend:
    """A dataset's spend against its cap, and over time."""

    dataset_id: str
    measure: str
    cap_units: int
    spent_units: int
    releases: int
    series: tuple[Series, ...]
    """The dataset's running total; one line per organisation where they are public."""

    @property
    def cap(self) -> str:
        return amount_text(self.measure, self.cap_units)

    @property
    def spent(self) -> str:
        return amount_text(self.measure, self.spent_units)

    @property
    def remaining(self) -> str:
        return amount_text(self.measure, max(0, self.cap_units - self.spent_units))

    @property
    def percent(self) -> int:
        return 0 if self.cap_units == 0 else round(100 * self.spent_units / self.cap_units)

    @property
    def cap_decimal(self) -> Decimal:
        return units_to_decimal(self.cap_units)


@dataclass(frozen=True, slots=True)
class VersionRow:
    """A published dataset version: when, its public bounds and contribution bound."""

    version: str
    published_at: str
    current: bool
    bounds: tuple[tuple[str, str], ...]
    """(column in words, "0 to 60") for every column a sum clamps."""
    contribution_bound: str


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything the public pages show, at one audit head."""

    head_count: int
    rows: tuple[ReleaseRow, ...]
    """Newest first."""
    datasets: tuple[DatasetSpend, ...]


class PublicData:
    """Reads and caches the public figures; rebuilt when the audit head moves."""

    def __init__(
        self,
        ledger: Ledger,
        store_root: Path,
        heads: HeadPublisher | None,
        *,
        show_organisations: bool,
    ) -> None:
        self._ledger = ledger
        self._store = DatasetStore(store_root)
        self._heads = heads
        self._show_organisations = show_organisations
        self._lock = threading.Lock()
        self._snapshot: Snapshot | None = None
        self._cells: dict[str, int | None] = {}

    @property
    def show_organisations(self) -> bool:
        return self._show_organisations

    def snapshot(self) -> Snapshot:
        """The figures at the current head (cached until it moves)."""
        report = self._ledger.transparency_report()
        with self._lock:
            cached = self._snapshot
            if cached is not None and cached.head_count == report.head.count:
                return cached
            built = self._build(report)
            self._snapshot = built
            return built

    def cells(self, release_id: str) -> int | None:
        """How many cells a release has (None if it cannot be read); values are not kept."""
        if release_id not in self._cells:
            try:
                payload = self._ledger.get_release(release_id).payload
                self._cells[release_id] = Release.from_bytes(payload).cell_count
            except Exception:
                self._cells[release_id] = None
        return self._cells[release_id]

    def versions(self, dataset_id: str) -> list[VersionRow]:
        """The dataset's published versions, newest first (empty if the store has none)."""
        try:
            names = self._store.versions(dataset_id)
            current = self._store.current(dataset_id).version
        except (LookupError, OSError):
            return []
        rows = []
        for name in reversed(names):
            version = self._store.open_version(dataset_id, name)
            bounds = tuple(
                (column_words(c.name), f"{c.bounds[0]} to {c.bounds[1]}")
                for c in version.metadata.columns
                if c.summable and c.bounds is not None
            )
            bound = version.manifest.bound
            if bound is None:
                contribution = (
                    f"at most {version.metadata.max_contributions} appointments per patient,"
                    " cut at each query"
                )
            else:
                checked = "verified" if bound.verified else "not verified"
                contribution = (
                    f"at most {bound.max_contributions} appointments per patient,"
                    f" cut at publishing and {checked}"
                )
            rows.append(
                VersionRow(name, version.manifest.created_at, name == current, bounds, contribution)
            )
        return rows

    def signed_heads(self, limit: int = 100) -> list[SignedHead]:
        return [] if self._heads is None else self._heads.history(limit)

    def signed_head(self, event_count: int) -> SignedHead | None:
        return None if self._heads is None else self._heads.get(event_count)

    @property
    def public_key(self) -> str | None:
        return None if self._heads is None else self._heads.public_key

    def _build(self, report: TransparencyReport) -> Snapshot:
        events = self._answered_events(report.head.count)
        rows = []
        for entry in report.entries:
            event = events.get(entry.seq)
            question = describe(entry.query_text)
            rows.append(
                ReleaseRow(
                    seq=entry.seq,
                    at=entry.at,
                    purpose=entry.purpose,
                    agreement=entry.agreement,
                    organisation=entry.organisation if self._show_organisations else "",
                    dataset_id=entry.dataset_id,
                    dataset_version=question.dataset_version,
                    question=question.words,
                    measure=entry.measure or question.measure,
                    spend_units=entry.spend_units,
                    release_id=event.release_id or "" if event else "",
                    repeat=entry.spend_units == 0,
                )
            )
        datasets = tuple(self._dataset_spend(report, d.dataset_id) for d in report.datasets)
        return Snapshot(report.head.count, tuple(reversed(rows)), datasets)

    def _answered_events(self, up_to: int) -> dict[int, AuditEvent]:
        found: dict[int, AuditEvent] = {}
        after = 0
        while after < up_to:
            batch = self._ledger.list_events(after, min(1000, up_to - after))
            if not batch:
                break
            for event in batch:
                if event.outcome is Outcome.ANSWERED and event.release_id is not None:
                    found[event.seq] = event
            after = batch[-1].seq
        return found

    def _dataset_spend(self, report: TransparencyReport, dataset_id: str) -> DatasetSpend:
        dataset = next(d for d in report.datasets if d.dataset_id == dataset_id)
        entries = [e for e in report.entries if e.dataset_id == dataset_id and e.spend_units]
        lines = [
            Series(
                "all requesters",
                tuple(Point(e.at, units_to_decimal(e.cumulative_dataset_units)) for e in entries),
            )
        ]
        if self._show_organisations:
            running: dict[str, int] = {}
            points: dict[str, list[Point]] = {}
            for e in entries:
                running[e.organisation] = running.get(e.organisation, 0) + e.spend_units
                points.setdefault(e.organisation, []).append(
                    Point(e.at, units_to_decimal(running[e.organisation]))
                )
            lines.extend(Series(org, tuple(p)) for org, p in sorted(points.items()))
        return DatasetSpend(
            dataset_id=dataset_id,
            measure=dataset.measure,
            cap_units=dataset.cap_units,
            spent_units=dataset.spent_units,
            releases=len(entries),
            series=tuple(lines),
        )

"""The public transparency report: every answered query, what it cost, and the chain head.

Built from the audit chain (events answered with a release), never from the releases
themselves, so no released value can appear in it. Each entry carries its event's sequence
number and hash, and the report carries the head it was built at: anyone keeping a copy
can later ask for `Ledger.verify(expected_head=...)` and detect a rewritten or cut chain.

CSV layout: one header row, then one row per record. The first record is
`record=head` (its `seq` is the head's event count, `event_hash` the head hash, `time` the
report time); `record=dataset` rows give each dataset's cap and total spend; then
`record=query` rows, oldest first. Each query carries the purpose and agreement of the
allocation it was asked under ("not recorded" for allocations granted before purposes were
required).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from dataclasses import dataclass
from typing import Any

from dpgate_server.ledger._time import format_time
from dpgate_server.ledger.model import NOT_RECORDED, ChainHead, Outcome
from dpgate_server.ledger.storage import StorageTransaction
from dpgate_server.spend import measure_of, plain, units_to_decimal
from dpgate_server.vocabulary.accounting import Accounting

CSV_COLUMNS = (
    "record",
    "seq",
    "time",
    "organisation",
    "dataset_id",
    "measure",
    "query",
    "spend",
    "spend_units",
    "cumulative_spend_units",
    "cap_units",
    "event_hash",
    "purpose",
    "agreement",
)


@dataclass(frozen=True, slots=True)
class TransparencyEntry:
    """One answered query as the public sees it (no value, no requester name)."""

    seq: int
    at: dt.datetime
    organisation: str
    dataset_id: str
    measure: str
    query_text: str
    spend_units: int
    cumulative_dataset_units: int
    event_hash: str
    purpose: str = NOT_RECORDED
    agreement: str = NOT_RECORDED


@dataclass(frozen=True, slots=True)
class TransparencyDataset:
    """A dataset's cap and what was spent on it in total."""

    dataset_id: str
    measure: str
    cap_units: int
    spent_units: int


@dataclass(frozen=True, slots=True)
class TransparencyReport:
    """The whole report, at one consistent snapshot of the ledger."""

    generated_at: dt.datetime
    head: ChainHead
    datasets: tuple[TransparencyDataset, ...]
    entries: tuple[TransparencyEntry, ...]

    def to_json(self) -> str:
        """The report as JSON (spends as exact decimal strings and integer units)."""
        return json.dumps(_to_dict(self), indent=1, sort_keys=True, ensure_ascii=False)

    def to_csv(self) -> str:
        """The report as CSV (see the module docstring for the layout)."""
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        writer.writerow(
            ["head", self.head.count, format_time(self.generated_at)]
            + [""] * 8
            + [self.head.hash, "", ""]
        )
        for d in self.datasets:
            spend = _decimal_text(d.spent_units)
            writer.writerow(
                [
                    "dataset",
                    "",
                    "",
                    "",
                    d.dataset_id,
                    d.measure,
                    "",
                    spend,
                    d.spent_units,
                    d.spent_units,
                    d.cap_units,
                    "",
                    "",
                    "",
                ]
            )
        for e in self.entries:
            writer.writerow(
                [
                    "query",
                    e.seq,
                    format_time(e.at),
                    e.organisation,
                    e.dataset_id,
                    e.measure,
                    e.query_text,
                    _decimal_text(e.spend_units),
                    e.spend_units,
                    e.cumulative_dataset_units,
                    "",
                    e.event_hash,
                    e.purpose,
                    e.agreement,
                ]
            )
        return out.getvalue()


def build_report(tx: StorageTransaction, generated_at: dt.datetime) -> TransparencyReport:
    """Read the chain, requesters and datasets in one snapshot and assemble the report."""
    head = tx.get_head()
    organisations = {r.requester_id: r.organisation for r in tx.list_requesters()}
    allocations = {(a.requester_id, a.dataset_id): a for a in tx.list_allocations()}
    datasets = {d.dataset_id: d for d in tx.list_datasets()}
    measures = {d.dataset_id: _measure(d.accounting) for d in datasets.values()}
    cumulative: dict[str, int] = {}
    entries: list[TransparencyEntry] = []
    for event in tx.iter_events():
        if event.seq > head.count:
            break
        if event.outcome is not Outcome.ANSWERED or event.release_id is None:
            continue
        dataset_id = event.dataset_id or ""
        cumulative[dataset_id] = cumulative.get(dataset_id, 0) + event.cost_units
        allocation = allocations.get((event.requester_id or "", dataset_id))
        entries.append(
            TransparencyEntry(
                seq=event.seq,
                at=event.at,
                organisation=organisations.get(event.requester_id or "", ""),
                dataset_id=dataset_id,
                measure=measures.get(dataset_id, ""),
                query_text=event.query_text,
                spend_units=event.cost_units,
                cumulative_dataset_units=cumulative[dataset_id],
                event_hash=event.event_hash,
                purpose=allocation.purpose if allocation else NOT_RECORDED,
                agreement=allocation.agreement if allocation else NOT_RECORDED,
            )
        )
    return TransparencyReport(
        generated_at=generated_at,
        head=head,
        datasets=tuple(
            TransparencyDataset(d.dataset_id, measures[d.dataset_id], d.cap_units, d.spent_units)
            for d in datasets.values()
        ),
        entries=tuple(entries),
    )


def _decimal_text(units: int) -> str:
    """Exact plain decimal (never exponent notation): 250 units -> "0.00000025"."""
    return plain(units_to_decimal(units))


def _measure(accounting: Accounting) -> str:
    return measure_of(accounting)


def _to_dict(report: TransparencyReport) -> dict[str, Any]:
    return {
        "generated_at": format_time(report.generated_at),
        "head": {"count": report.head.count, "hash": report.head.hash},
        "datasets": [
            {
                "dataset_id": d.dataset_id,
                "measure": d.measure,
                "cap": _decimal_text(d.cap_units),
                "cap_units": d.cap_units,
                "spent": _decimal_text(d.spent_units),
                "spent_units": d.spent_units,
            }
            for d in report.datasets
        ],
        "queries": [
            {
                "seq": e.seq,
                "time": format_time(e.at),
                "organisation": e.organisation,
                "dataset_id": e.dataset_id,
                "measure": e.measure,
                "query": e.query_text,
                "spend": _decimal_text(e.spend_units),
                "spend_units": e.spend_units,
                "cumulative_spend_units": e.cumulative_dataset_units,
                "event_hash": e.event_hash,
                "purpose": e.purpose,
                "agreement": e.agreement,
            }
            for e in report.entries
        ],
    }

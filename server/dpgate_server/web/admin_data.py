"""The figures of the administrator pages: allocations, warnings, spending, refusals.

Administrators may see who spent what (names and organisations); these pages are behind
an admin token, never public.
"""

from __future__ import annotations

import datetime as dt
import re
from collections import Counter
from dataclasses import dataclass
from decimal import Decimal

from dpgate_server.ledger.ledger import Ledger
from dpgate_server.ledger.model import Outcome
from dpgate_server.spend import units_to_decimal
from dpgate_server.vocabulary.accounting import Accounting
from dpgate_server.vocabulary.errors import ErrorReason
from dpgate_server.web.charts import Point, Series
from dpgate_server.web.public_data import amount_text

_REASON = re.compile(r"[A-Z][A-Z0-9_]+")
_COUNT = re.compile(r"(\d+) unauthenticated")


@dataclass(frozen=True, slots=True)
class AllocationRow:
    requester_id: str
    name: str
    organisation: str
    dataset_id: str
    measure: str
    granted_units: int
    spent_units: int
    remaining_units: int
    expires_at: dt.datetime | None
    releases: int
    warning: str

    @property
    def granted(self) -> str:
        return amount_text(self.measure, self.granted_units)

    @property
    def spent(self) -> str:
        return amount_text(self.measure, self.spent_units)

    @property
    def remaining(self) -> str:
        return amount_text(self.measure, self.remaining_units)


@dataclass(frozen=True, slots=True)
class CapRow:
    dataset_id: str
    cap: str
    spent: str
    percent: int
    warning: str


@dataclass(frozen=True, slots=True)
class AdminView:
    allocations: tuple[AllocationRow, ...]
    caps: tuple[CapRow, ...]
    spending: tuple[Series, ...]
    refusals: tuple[tuple[str, int], ...]
    """(reason, count), most frequent first."""


def admin_view(ledger: Ledger, near_cap_fraction: float, now: dt.datetime) -> AdminView:
    """Read allocations, caps, releases and refusals in the ledger's current state."""
    report = ledger.admin.spending_report()
    measures = {
        d.dataset_id: "epsilon" if d.accounting is Accounting.PURE_DP else "rho"
        for d in report.datasets
    }
    allocations = []
    for line in report.lines:
        expired = line.expires_at is not None and now >= line.expires_at
        remaining = 0 if expired else max(0, line.granted_units - line.spent_units)
        allocations.append(
            AllocationRow(
                requester_id=line.requester_id,
                name=line.name,
                organisation=line.organisation,
                dataset_id=line.dataset_id,
                measure=measures.get(line.dataset_id, "epsilon"),
                granted_units=line.granted_units,
                spent_units=line.spent_units,
                remaining_units=remaining,
                expires_at=line.expires_at,
                releases=line.releases,
                warning=_warning(line.spent_units, line.granted_units, near_cap_fraction, expired),
            )
        )
    caps = tuple(
        CapRow(
            dataset_id=d.dataset_id,
            cap=amount_text(measures[d.dataset_id], d.cap_units),
            spent=amount_text(measures[d.dataset_id], d.spent_units),
            percent=0 if d.cap_units == 0 else round(100 * d.spent_units / d.cap_units),
            warning=_warning(d.spent_units, d.cap_units, near_cap_fraction, False),
        )
        for d in report.datasets
    )
    return AdminView(tuple(allocations), caps, _spending(ledger), _refusals(ledger))


def _warning(spent: int, limit: int, fraction: float, expired: bool) -> str:
    if expired:
        return "expired"
    if limit == 0:
        return ""
    if spent >= limit:
        return "fully spent"
    if spent >= Decimal(str(fraction)) * limit:
        return f"over {round(fraction * 100)}% spent"
    return ""


def _spending(ledger: Ledger) -> tuple[Series, ...]:
    running: dict[str, int] = {}
    points: dict[str, list[Point]] = {}
    for release in ledger.admin.list_releases():
        running[release.requester_id] = running.get(release.requester_id, 0) + release.cost_units
        points.setdefault(release.requester_id, []).append(
            Point(release.created_at, units_to_decimal(running[release.requester_id]))
        )
    return tuple(Series(requester, tuple(p)) for requester, p in sorted(points.items()))


def _refusals(ledger: Ledger) -> tuple[tuple[str, int], ...]:
    counts: Counter[str] = Counter()
    after = 0
    while True:
        batch = ledger.list_events(after, 1000)
        if not batch:
            break
        for event in batch:
            if event.outcome is Outcome.ANSWERED:
                continue
            reason, n = _reason(event.outcome, event.detail)
            counts[reason] += n
        after = batch[-1].seq
    return tuple(counts.most_common())


def _reason(outcome: Outcome, detail: str) -> tuple[str, int]:
    if outcome is Outcome.UNAUTHENTICATED:
        found = _COUNT.match(detail)
        return ErrorReason.BAD_TOKEN.value, int(found.group(1)) if found else 1
    if _REASON.fullmatch(detail):
        return detail, 1
    if outcome is Outcome.REFUSED:  # the ledger's budget refusals say what was requested
        return ErrorReason.BUDGET_EXHAUSTED.value, 1
    return outcome.value.upper(), 1

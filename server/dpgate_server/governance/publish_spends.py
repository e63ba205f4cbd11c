"""Charging a publish-time spend to the dataset's cap (reusable by every publish-time release).

A publish may release DP statistics of the version it builds: the bias figure
(governance/bias_figure.py), or a bound chosen by a DP quantile. Each is paid for the same
way: an administrator declares its spend in the settings (`DeclaredSpend`); before the
statistic can leave the process, `charge_declared_spend` asks the ledger to charge it to
the dataset's global cap, at most `max_per_version` times per version and purpose, in one
audited transaction; and the version's manifest records the outcome
(`store.publish_records.PublishSpendRecord`) with the statistic. If the cap cannot pay, or
the version has spent its allowance, nothing is charged, the statistic is not released,
and the publish goes on: the record, the log and the publish result say why.

Usage at publish (hold the dataset's build lock, so the version's name is the one sealed):

    version = store.next_version_name(dataset_id)
    record = charge_declared_spend(ledger, dataset_id, version, declared, request)
    if record.charged:
        ...  # keep the statistic; else drop it
    store.publish(builder, bound, source, PublishRecords(spends=(record,)),
                  expected_version=version)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

from dpgate_server.ledger.errors import LedgerBusy, LedgerUnavailable
from dpgate_server.ledger.model import PublishCharge, RequestInfo
from dpgate_server.spend import describe
from dpgate_server.store.publish_records import PublishSpendRecord
from dpgate_server.vocabulary.accounting import Accounting
from dpgate_server.vocabulary.errors import DatasetNotFoundError

_log = logging.getLogger(__name__)


class PublishSpendLedger(Protocol):
    """The part of the ledger a publish charges (`Ledger.charge_publish_spend`)."""

    def charge_publish_spend(
        self,
        dataset_id: str,
        dataset_version: str,
        purpose: str,
        cost_units: int,
        request: RequestInfo,
        *,
        max_per_version: int = 1,
    ) -> PublishCharge: ...


@dataclass(frozen=True, slots=True)
class DeclaredSpend:
    """A publish-time spend as an administrator declared it (config).

    Attributes:
        purpose: what it pays for (the ledger and manifest name it so).
        accounting: the dataset's accounting (epsilon for pure DP, rho for zCDP).
        units: the spend, in ledger units (1e-9 epsilon or rho), positive.
        max_per_version: how many times one version may spend on this purpose.
    """

    purpose: str
    accounting: Accounting
    units: int
    max_per_version: int = 1

    def __post_init__(self) -> None:
        if isinstance(self.units, bool) or self.units < 1:
            raise ValueError("a declared publish spend is at least one unit")
        if self.max_per_version < 1:
            raise ValueError("a version may spend at least once when the spend is declared")


def charge_declared_spend(
    ledger: PublishSpendLedger | None,
    dataset_id: str,
    dataset_version: str,
    declared: DeclaredSpend,
    request: RequestInfo,
) -> PublishSpendRecord:
    """Charge `declared` to the dataset's cap for `dataset_version`; the manifest's record.

    Never raises for a spend the cap cannot pay or the version's limit refuses: the record
    says it was not charged and why (logged as a warning), and the caller releases nothing.
    Likewise for a dataset the ledger has no cap for. Without a ledger (a publish outside a
    server, e.g. a test or an offline tool) nothing can be charged, so nothing is released
    either.
    """
    amount = describe(declared.units, declared.accounting)
    if ledger is None:
        note = f"no ledger to charge {amount} to: {declared.purpose} not released"
        _log.warning("publish of %s %s: %s", dataset_id, dataset_version, note)
        return _not_charged(declared, note)
    try:
        charge = ledger.charge_publish_spend(
            dataset_id,
            dataset_version,
            declared.purpose,
            declared.units,
            request,
            max_per_version=declared.max_per_version,
        )
    except DatasetNotFoundError:
        note = f"the ledger has no cap for {dataset_id} to charge {amount} to"
        note += f" (create the dataset in the ledger): {declared.purpose} not released"
        _log.warning("publish of %s %s: %s", dataset_id, dataset_version, note)
        return _not_charged(declared, note)
    except (LedgerBusy, LedgerUnavailable) as error:
        # Whether the charge committed is unknown: release nothing (never less charged than
        # released); the version is published without the statistic.
        note = f"the ledger could not be reached to charge {amount} ({error.reason.value}):"
        note += f" {declared.purpose} not released"
        _log.warning("publish of %s %s: %s", dataset_id, dataset_version, note)
        return _not_charged(declared, note)
    if charge.spend is None:
        note = f"{charge.refusal}: {declared.purpose} not released, nothing charged"
        _log.warning("publish of %s %s: %s", dataset_id, dataset_version, note)
        return _not_charged(declared, note)
    _log.info(
        "publish of %s %s: %s charged %s to the dataset's cap (%s)",
        dataset_id,
        dataset_version,
        declared.purpose,
        amount,
        charge.spend.spend_id,
    )
    return PublishSpendRecord(
        purpose=declared.purpose,
        accounting=declared.accounting,
        declared_units=declared.units,
        charged=True,
        spend_id=charge.spend.spend_id,
    )


def _not_charged(declared: DeclaredSpend, note: str) -> PublishSpendRecord:
    return PublishSpendRecord(
        purpose=declared.purpose,
        accounting=declared.accounting,
        declared_units=declared.units,
        charged=False,
        note=note,
    )

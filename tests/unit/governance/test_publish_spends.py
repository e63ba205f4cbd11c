"""The reusable publish-time charge: a declared spend charged to the dataset's cap once per
version, its outcome recorded for the manifest (charged, or not and why)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from dpgate_server.governance.publish_spends import DeclaredSpend, charge_declared_spend
from dpgate_server.ledger import Ledger, RequestInfo
from dpgate_server.store.publish_records import (
    BIAS_FIGURE,
    BiasFigure,
    BoundKind,
    DroppedPatients,
    PublishSpendRecord,
)
from dpgate_server.store.store import ContributionBound, FileRecord, VersionManifest
from dpgate_server.vocabulary.accounting import Accounting

DATASET = "gp_appointments"
PUBLISH = RequestInfo(request_id="pub", rpc="PublishDatasetVersion")
FIGURE = DeclaredSpend(BIAS_FIGURE, Accounting.PURE_DP, 50_000_000)


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    with Ledger.open_sqlite(tmp_path / "ledger.db") as opened:
        opened.admin.create_dataset(
            DATASET,
            accounting=Accounting.PURE_DP,
            cap_units=1_000_000_000,
            reason="t",
            request=PUBLISH,
        )
        yield opened


def test_a_declared_spend_is_charged_once_per_version(ledger: Ledger) -> None:
    first = charge_declared_spend(ledger, DATASET, "v000002", FIGURE, PUBLISH)
    assert first.charged
    assert first.spend_id is not None
    assert first.declared_units == 50_000_000
    second = charge_declared_spend(ledger, DATASET, "v000002", FIGURE, PUBLISH)
    assert not second.charged
    assert second.spend_id is None
    assert "not released, nothing charged" in second.note
    assert ledger.get_dataset(DATASET).spent_units == 50_000_000
    assert [s.spend_id for s in ledger.publish_spends(DATASET)] == [first.spend_id]


def test_a_cap_that_cannot_pay_charges_nothing(ledger: Ledger) -> None:
    costly = DeclaredSpend(BIAS_FIGURE, Accounting.PURE_DP, 2_000_000_000)
    record = charge_declared_spend(ledger, DATASET, "v000002", costly, PUBLISH)
    assert not record.charged
    assert "has epsilon 1 left" in record.note
    assert ledger.get_dataset(DATASET).spent_units == 0
    assert ledger.reconcile().ok


def test_without_a_ledger_nothing_is_charged_or_released() -> None:
    record = charge_declared_spend(None, DATASET, "v000002", FIGURE, PUBLISH)
    assert not record.charged
    assert "no ledger" in record.note


def test_the_manifest_keeps_spends_and_the_figure() -> None:
    figure = BiasFigure(
        released=True,
        counts=(
            DroppedPatients(BoundKind.TOTAL_ROWS, None, 24, 1_234, 60),
            DroppedPatients(BoundKind.ROWS_PER_PERIOD, "week", 3, -7, 60),
        ),
        mechanism="discrete_laplace",
        noise_scale=40.0,
        confidence_level=0.95,
        accounting=Accounting.PURE_DP,
        spend_units=50_000_000,
    )
    spend = PublishSpendRecord(BIAS_FIGURE, Accounting.PURE_DP, 50_000_000, True, "pub_1")
    manifest = VersionManifest(
        dataset_id=DATASET,
        version="v000002",
        created_at="2025-01-01T00:00:00+00:00",
        appointment_files=(FileRecord("appointments/2025-01.parquet", "ab", 3),),
        public_files=(),
        bound=ContributionBound(24, True, "keyed-hash-k-per-patient", seed=3),
        source={},
        publish_spends=(spend,),
        bias_figure=figure,
    )
    assert VersionManifest.from_json(manifest.to_json()) == manifest
    withheld = BiasFigure.withheld("the cap of gp_appointments has epsilon 0 left")
    again = VersionManifest.from_json(
        VersionManifest(**{**_fields(manifest), "bias_figure": withheld}).to_json()
    )
    assert again.bias_figure == withheld


def test_a_figure_not_released_must_say_why_and_hold_no_counts() -> None:
    with pytest.raises(ValueError, match="says why"):
        BiasFigure(released=False)
    with pytest.raises(ValueError, match="records its spend"):
        BiasFigure(
            released=True,
            counts=(DroppedPatients(BoundKind.TOTAL_ROWS, None, 24, 1, 1),),
            mechanism="discrete_laplace",
            noise_scale=1.0,
        )


def _fields(manifest: VersionManifest) -> dict[str, object]:
    return {name: getattr(manifest, name) for name in manifest.__slots__}  # type: ignore[attr-defined]

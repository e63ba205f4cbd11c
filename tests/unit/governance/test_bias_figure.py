"""The bias figure: released once per version, charged to the dataset's cap and recorded in
the manifest; withheld (publish still succeeds, nothing charged) when the cap cannot pay or
the setting is off; its intervals cover the true counts at their level."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from dpgate_server.governance.bias_figure import (
    BiasFigurePolicy,
    DroppedTally,
    NoisedFigure,
    noise_tally,
    settle_figure,
)
from dpgate_server.ledger import Ledger
from dpgate_server.queries.accuracy import coverage
from dpgate_server.queries.model import Mechanism
from dpgate_server.store.period_bounding import cut_steps, period_cut
from dpgate_server.store.period_bounds import PeriodBounds, PeriodCap
from dpgate_server.store.publish_records import BIAS_FIGURE, BoundKind, PublishSpendRecord
from dpgate_server.store.store import DatasetStore
from dpgate_server.vocabulary.accounting import Accounting
from tests.support.dropped_patients import heavy_patient_rows, true_patients_cut
from tests.unit.governance.helpers import (
    DATASET_ID,
    OPERATOR,
    OTHER,
    SMALL,
    RecordingAudit,
    World,
    csv_bytes,
    good_row,
    open_governance,
    provider,
    valid_numbers,
)

K = 6
BOUNDS = PeriodBounds(
    (
        PeriodCap("week", rows=2, periods=3, practice_periods=3),
        PeriodCap("month", rows=4, periods=2, practice_periods=2),
    )
)
DRAWS = 400
"""Figures drawn per accounting: 7 counts each, 2,800 intervals."""
CAP_UNITS = 10_000_000_000
"""epsilon 10."""


@pytest.fixture
def ledger(world: World, tmp_path: Path) -> Iterator[Ledger]:
    accounting = DatasetStore(world.store_root).current(DATASET_ID).metadata.accounting
    with Ledger.open_sqlite(tmp_path / "ledger.db") as opened:
        opened.admin.create_dataset(
            DATASET_ID, accounting=accounting, cap_units=CAP_UNITS, reason="t", request=OPERATOR
        )
        yield opened


def _stage_a_heavy_patient(governance) -> None:  # type: ignore[no-untyped-def]
    """One patient with 20 rows at each of two practices: 40 rows, over the bound of 24."""
    number = valid_numbers(1, start=99)[0]
    both = provider(SMALL, OTHER)
    for practice in (SMALL, OTHER):
        rows = [good_row(practice_code=practice, nhs_number=number) for _ in range(20)]
        governance.ingest(DATASET_ID, practice, csv_bytes(rows), both)


def test_each_version_releases_its_figure_once_charged_to_the_cap(
    world: World, ledger: Ledger
) -> None:
    audit = RecordingAudit()
    policy = BiasFigurePolicy()
    governance = open_governance(world, audit, bias_figure=policy, spends=ledger)
    _stage_a_heavy_patient(governance)
    result = governance.publish(DATASET_ID, OPERATOR)
    figure = result.bias_figure
    assert figure is not None
    assert figure.released
    (count,) = figure.counts  # the dataset has the total bound only
    assert (count.bound, count.period, count.limit) == (BoundKind.TOTAL_ROWS, None, 24)
    assert count.half_width > 0
    version = result.version
    assert version.manifest.bias_figure == figure
    (record,) = version.manifest.publish_spends
    assert record.charged
    assert record.purpose == BIAS_FIGURE
    (spend,) = ledger.publish_spends(DATASET_ID)
    assert (spend.spend_id, spend.dataset_version) == (record.spend_id, version.version)
    assert spend.cost_units == policy.epsilon_units == figure.spend_units
    assert ledger.get_dataset(DATASET_ID).spent_units == policy.epsilon_units
    assert "bias figure released" in audit.details()[-1]

    second = governance.publish(DATASET_ID, OPERATOR)  # a new version: its own figure
    assert second.bias_figure is not None
    assert second.bias_figure.released
    spends = ledger.publish_spends(DATASET_ID)
    assert [s.dataset_version for s in spends] == [version.version, second.version.version]
    assert ledger.get_dataset(DATASET_ID).spent_units == 2 * policy.epsilon_units
    assert ledger.reconcile().ok
    # the figure is stored: reading the version again gives the same figure, no new noise
    reopened = DatasetStore(world.store_root).open_version(DATASET_ID, version.version)
    assert reopened.manifest.bias_figure == figure


def test_a_cap_too_small_publishes_without_a_figure_and_charges_nothing(
    world: World, ledger: Ledger, caplog: pytest.LogCaptureFixture
) -> None:
    ledger.admin.set_dataset_cap(DATASET_ID, 1_000, reason="nearly spent", request=OPERATOR)
    audit = RecordingAudit()
    governance = open_governance(world, audit, bias_figure=BiasFigurePolicy(), spends=ledger)
    _stage_a_heavy_patient(governance)
    result = governance.publish(DATASET_ID, OPERATOR)
    assert result.version.version == "v000002"  # published all the same
    figure = result.bias_figure
    assert figure is not None
    assert not figure.released
    assert figure.counts == ()
    assert "the cap of gp_appointments has epsilon 0.000001 left" in figure.note
    assert result.version.manifest.bias_figure == figure
    (record,) = result.version.manifest.publish_spends
    assert not record.charged
    assert record.spend_id is None
    assert ledger.get_dataset(DATASET_ID).spent_units == 0
    assert ledger.publish_spends() == []
    assert "no bias figure: the cap of" in audit.details()[-1]
    assert "bias_figure not released, nothing charged" in caplog.text


def test_a_figure_turned_off_is_recorded_as_none_and_nothing_is_charged(
    world: World, ledger: Ledger
) -> None:
    policy = BiasFigurePolicy(enabled=False)
    governance = open_governance(world, RecordingAudit(), bias_figure=policy, spends=ledger)
    result = governance.publish(DATASET_ID, OPERATOR)
    figure = result.version.manifest.bias_figure
    assert figure is not None
    assert not figure.released
    assert "turned off" in figure.note
    assert result.version.manifest.publish_spends == ()
    assert ledger.get_dataset(DATASET_ID).spent_units == 0


@pytest.mark.parametrize("accounting", [Accounting.PURE_DP, Accounting.ZCDP])
def test_the_figures_intervals_cover_the_true_counts_at_their_level(
    accounting: Accounting,
) -> None:
    rows = heavy_patient_rows(5)
    steps = cut_steps(K, BOUNDS)
    # the truth from the fixture, by the independent reference; the tally as the publish does
    truth = dict(
        zip(((s.kind, s.period) for s in steps), true_patients_cut(rows, K, BOUNDS), strict=True)
    )
    tally = DroppedTally(steps)
    tally.add(period_cut(rows, K, BOUNDS).patients_cut)
    policy = BiasFigurePolicy()
    spend = policy.declared(accounting)
    paid = PublishSpendRecord(BIAS_FIGURE, accounting, spend.units, charged=True, spend_id="p")
    errors: list[int] = []
    half_width = 0
    scale = 0.0
    for _ in range(DRAWS):
        noised = noise_tally(tally, accounting, policy)
        assert isinstance(noised, NoisedFigure)
        figure = settle_figure(noised, paid)
        half_width, scale = figure.counts[0].half_width, figure.noise_scale
        errors.extend(c.value - truth[(c.bound, c.period)] for c in figure.counts)
    mechanism = (
        Mechanism.DISCRETE_LAPLACE
        if accounting is Accounting.PURE_DP
        else Mechanism.DISCRETE_GAUSSIAN
    )
    expected = coverage(mechanism, scale, half_width)
    assert expected >= 0.95
    n = len(errors)
    covered = float(np.mean(np.abs(errors) <= half_width))
    assert abs(covered - expected) <= 4.5 * math.sqrt(expected * (1 - expected) / n)
    sd = float(np.std(errors))
    assert abs(float(np.mean(errors))) <= 4.5 * sd / math.sqrt(n)  # unbiased


def test_a_version_with_period_caps_releases_a_count_per_bound_total_first(
    world: World, ledger: Ledger
) -> None:
    caps = PeriodBounds((PeriodCap("week", rows=3, periods=10),))
    governance = open_governance(
        world,
        RecordingAudit(),
        period_bounds={DATASET_ID: caps},
        bias_figure=BiasFigurePolicy(),
        spends=ledger,
    )
    _stage_a_heavy_patient(governance)
    figure = governance.publish(DATASET_ID, OPERATOR).bias_figure
    assert figure is not None
    assert figure.released
    assert [(c.bound, c.period, c.limit) for c in figure.counts] == [
        (BoundKind.TOTAL_ROWS, None, 24),
        (BoundKind.ROWS_PER_PERIOD, "week", 3),
        (BoundKind.PERIODS, "week", 10),
    ]
    # three counts share the spend: each has three times the noise of a count alone
    assert figure.noise_scale == pytest.approx(3 / 0.05, rel=1e-9)
    assert ledger.get_dataset(DATASET_ID).spent_units == BiasFigurePolicy().epsilon_units

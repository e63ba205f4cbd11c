"""Bounds chosen privately at publish (issue 18 item 2): charged once to the dataset's cap
before anything is chosen, recorded in the manifest, enforced and verified like policy
bounds; a cap that cannot pay leaves the policy's bounds, and says so.

The world is test_period_publish's (five practices, SMALL and OTHER upload extracts), with a
week bound declared (k = 5, g = 40) and a K of 1,000 far above what any patient has, so a
choice visibly replaces it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest

from dpgate_server.governance.bound_choice import BoundChoicePolicy
from dpgate_server.governance.errors import GovernanceError
from dpgate_server.governance.publishing import BOUND_CHOICE, PublishResult
from dpgate_server.governance.service import Governance, GovernancePolicy
from dpgate_server.ledger import Ledger, RequestInfo
from dpgate_server.store.bounding import KEYED_HASH_PERIOD_BOUND_METHOD
from dpgate_server.store.chosen_bounds import TOTAL
from dpgate_server.store.period_bounding import bound_maxima, violations
from dpgate_server.store.period_bounds import PeriodBounds, PeriodCap
from dpgate_server.store.pseudonym import load_or_create_key
from dpgate_server.store.store import DatasetStore
from dpgate_server.vocabulary.accounting import Accounting
from dpgate_server.vocabulary.errors import ErrorReason
from tests.unit.governance.helpers import (
    DATASET_ID,
    OTHER,
    SMALL,
    RecordingAudit,
    World,
    copy_world,
    provider,
)

POLICY_K = 1_000
WEEK = PeriodBounds((PeriodCap("week", rows=5, periods=40),))
CHOICE = BoundChoicePolicy(
    bounds=(TOTAL, "week.rows", "week.periods"),
    level=0.99,
    epsilon_units=3_000_000_000,  # epsilon 1 a bound: a small world needs it (docs)
    rho_units=375_000_000,
    max_candidate=300,
)
PUBLISH = RequestInfo(request_id="publish-test", rpc="PublishDatasetVersion")


def _ledger(path: Path, accounting: Accounting, cap_units: int) -> Ledger:
    ledger = Ledger.open_sqlite(path)
    ledger.admin.create_dataset(
        DATASET_ID, accounting=accounting, cap_units=cap_units, reason="t", request=PUBLISH
    )
    return ledger


def _governance(
    world: World,
    ledger: Ledger,
    choice: BoundChoicePolicy | None,
    period_bounds: PeriodBounds | None = WEEK,
) -> Governance:
    """Governance of the world; `period_bounds` is the config's week bound (None: the config
    does not name the dataset, which keeps its versions' policy)."""
    policy = GovernancePolicy(
        root=world.governance_root,
        max_upload_bytes=64 * 1024 * 1024,
        opt_out_drops={},
        granted_by_default=frozenset({DATASET_ID}),
        keep_versions=100,
        period_bounds={} if period_bounds is None else {DATASET_ID: period_bounds},
        chosen_bounds={} if choice is None else {DATASET_ID: choice},
    )
    key_file = world.key_file
    store = DatasetStore(world.store_root)
    return Governance(
        store, policy, lambda: load_or_create_key(key_file), RecordingAudit(), spends=ledger
    )


def _publish(world: World, governance: Governance, **kwargs: object) -> PublishResult:
    for practice in (SMALL, OTHER):
        governance.ingest(DATASET_ID, practice, world.extract(practice), provider(SMALL, OTHER))
    return governance.publish(DATASET_ID, PUBLISH, **kwargs)  # type: ignore[arg-type]


def _with_policy_k(world: World) -> Accounting:
    """The world's current version declares K = POLICY_K (metadata is public policy); its
    accounting."""
    version = DatasetStore(world.store_root).current(DATASET_ID)
    metadata = dataclasses.replace(version.metadata, max_contributions=POLICY_K)
    (version.path / "metadata.json").write_text(metadata.to_json())
    return metadata.accounting


@pytest.fixture(scope="module")
def chosen(
    governance_world: World, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[World, Ledger, PublishResult]]:
    root = tmp_path_factory.mktemp("chosen")
    world = copy_world(governance_world, root / "world")
    accounting = _with_policy_k(world)
    with _ledger(root / "ledger.db", accounting, 10_000_000_000) as ledger:
        result = _publish(world, _governance(world, ledger, CHOICE))
        yield world, ledger, result


def test_chosen_bounds_are_enforced_verified_and_recorded(
    chosen: tuple[World, Ledger, PublishResult],
) -> None:
    _, _, result = chosen
    record = result.bound_choice
    assert record is not None
    assert record.choice is not None
    assert record.note == ""
    values = {b.name: b.value for b in record.choice.bounds}
    assert record.policy == {TOTAL: POLICY_K, "week.rows": 5, "week.periods": 40}
    version = result.version
    metadata = version.metadata
    assert metadata.max_contributions == values[TOTAL] < POLICY_K
    expected = PeriodBounds((PeriodCap("week", values["week.rows"], values["week.periods"]),))
    assert metadata.period_bounds == expected
    bound = version.manifest.bound
    assert bound is not None
    assert (bound.verified, bound.method) == (True, KEYED_HASH_PERIOD_BOUND_METHOD)
    assert (bound.max_contributions, bound.period_bounds) == (values[TOTAL], expected)
    maxima = bound_maxima(version.appointment_paths(), expected, 10**9)
    assert not violations(maxima, values[TOTAL], expected)
    assert version.manifest.chosen_bounds == record  # read back from the manifest
    assert 1 <= values["week.periods"] <= 53  # the calendar's weeks cap the candidates


def test_the_choice_is_charged_once_to_the_cap(
    chosen: tuple[World, Ledger, PublishResult],
) -> None:
    _, ledger, result = chosen
    declared = CHOICE.settings(result.version.metadata.accounting).spend_units
    spends = ledger.publish_spends(DATASET_ID)
    assert [(s.purpose, s.dataset_version, s.cost_units) for s in spends] == [
        (BOUND_CHOICE, result.version.version, declared)
    ]
    assert ledger.get_dataset(DATASET_ID).spent_units == declared
    (paid,) = result.version.manifest.publish_spends
    assert (paid.purpose, paid.charged, paid.spend_id) == (BOUND_CHOICE, True, spends[0].spend_id)
    record = result.bound_choice
    assert record is not None
    assert record.choice is not None
    assert declared - 3 <= record.choice.spend_units <= record.declared_units == declared
    assert ledger.reconcile().ok


def test_chosen_total_keeps_most_patients_whole(
    chosen: tuple[World, Ledger, PublishResult],
) -> None:
    """At epsilon 1 and level 0.99 the chosen K is near the 99th percentile of rows per
    patient: few patients reach it in the published files (those cut, and those with
    exactly K), never most."""
    _, _, result = chosen
    k = result.version.metadata.max_contributions
    rows = pl.scan_parquet([str(p) for p in result.version.appointment_paths()])
    per_patient = rows.group_by("patient_key").len().collect().get_column("len")
    assert per_patient.max() <= k
    assert (per_patient == k).mean() < 0.05


def test_a_publish_without_the_choice_returns_to_the_policy_bounds(
    chosen: tuple[World, Ledger, PublishResult], tmp_path: Path
) -> None:
    """A chosen value lasts one version: the next publish, with the choice turned off,
    enforces the administrator's K (and, with no period bounds in the config, the policy's
    week caps, not the chosen ones)."""
    world = copy_world(chosen[0], tmp_path / "world")
    accounting = chosen[2].version.metadata.accounting
    with _ledger(tmp_path / "ledger.db", accounting, 10_000_000_000) as ledger:
        governance = _governance(world, ledger, None, period_bounds=None)
        result = _publish(world, governance)
        assert ledger.publish_spends(DATASET_ID) == []
    assert result.bound_choice is None
    assert result.version.version != chosen[2].version.version
    metadata = result.version.metadata
    assert (metadata.max_contributions, metadata.period_bounds) == (POLICY_K, WEEK)
    bound = result.version.manifest.bound
    assert bound is not None
    assert (bound.verified, bound.max_contributions, bound.period_bounds) == (True, POLICY_K, WEEK)


def test_a_fall_back_after_a_chosen_version_uses_the_policy_bounds(
    chosen: tuple[World, Ledger, PublishResult], tmp_path: Path
) -> None:
    """After a version with chosen bounds, a publish whose choice the cap cannot pay records
    and enforces the administrator's values, not the last chosen ones."""
    world = copy_world(chosen[0], tmp_path / "world")
    accounting = chosen[2].version.metadata.accounting
    with _ledger(tmp_path / "ledger.db", accounting, 1_000_000) as ledger:
        result = _publish(world, _governance(world, ledger, CHOICE, period_bounds=None))
        assert ledger.get_dataset(DATASET_ID).spent_units == 0
    record = result.bound_choice
    assert record is not None
    assert record.choice is None
    assert record.policy == {TOTAL: POLICY_K, "week.rows": 5, "week.periods": 40}
    metadata = result.version.metadata
    assert (metadata.max_contributions, metadata.period_bounds) == (POLICY_K, WEEK)


def test_a_cap_that_cannot_pay_keeps_the_policy_bounds(
    governance_world: World, tmp_path: Path
) -> None:
    world = copy_world(governance_world, tmp_path / "world")
    accounting = _with_policy_k(world)
    with _ledger(tmp_path / "ledger.db", accounting, 1_000_000) as ledger:
        governance = _governance(world, ledger, None)
        result = _publish(world, governance, choose_bounds=(TOTAL,))
        assert ledger.get_dataset(DATASET_ID).spent_units == 0
        assert ledger.publish_spends(DATASET_ID) == []
    record = result.bound_choice
    assert record is not None
    assert record.choice is None
    assert "left" in record.note
    assert "nothing charged" in record.note
    assert result.version.metadata.max_contributions == POLICY_K
    assert result.version.metadata.period_bounds == WEEK
    assert result.version.manifest.chosen_bounds == record
    (unpaid,) = result.version.manifest.publish_spends
    assert (unpaid.purpose, unpaid.charged) == (BOUND_CHOICE, False)


def test_a_period_bound_is_chosen_only_where_one_is_declared(
    governance_world: World, tmp_path: Path
) -> None:
    world = copy_world(governance_world, tmp_path / "world")
    accounting = DatasetStore(world.store_root).current(DATASET_ID).metadata.accounting
    with _ledger(tmp_path / "ledger.db", accounting, 10_000_000_000) as ledger:
        governance = _governance(world, ledger, None)
        before = DatasetStore(world.store_root).current(DATASET_ID).version
        with pytest.raises(GovernanceError, match=r"month\.rows can be chosen only") as refused:
            governance.publish(DATASET_ID, PUBLISH, choose_bounds=("month.rows",))
        assert refused.value.reason is ErrorReason.BAD_VALUE
        with pytest.raises(GovernanceError, match="unknown bound"):
            governance.publish(DATASET_ID, PUBLISH, choose_bounds=("weekly",))
        assert ledger.get_dataset(DATASET_ID).spent_units == 0
    assert DatasetStore(world.store_root).current(DATASET_ID).version == before

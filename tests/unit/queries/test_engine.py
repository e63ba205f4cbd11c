"""The engine's entry points: prepare, execute, run and preview."""

from __future__ import annotations

import pytest

from dpgate_server.queries import (
    Aggregate,
    BoundingMethod,
    Filter,
    Query,
    Spend,
    execute,
    prepare,
    preview,
    run,
)
from dpgate_server.store.store import DatasetVersion
from tests.unit.queries.conftest import TinyVersions


def test_prepared_query_runs_only_on_its_own_version(tiny: TinyVersions) -> None:
    prepared = prepare(tiny.verified, Query("tiny", Aggregate.count(), spend=Spend.epsilon(1)))
    with pytest.raises(ValueError, match="only on the version it was prepared for"):
        execute(tiny.unverified, prepared)


def test_release_carries_version_cost_mechanism_and_key(tiny: TinyVersions) -> None:
    query = Query("tiny", Aggregate.count(), group_by=("status",), spend=Spend.epsilon(0.25))
    release = run(tiny.verified, query)
    assert (release.dataset_id, release.dataset_version) == ("tiny", tiny.verified.version)
    assert release.cost_units == 250_000_000
    assert release.mechanism.value == "discrete_laplace"
    assert release.noise_scale == pytest.approx(16.0)
    assert release.key == prepare(tiny.verified, query).key
    assert [c.key for c in release.cells] == [("Attended",), ("DNA",), ("Unknown",)]


def test_two_runs_of_one_query_share_a_key_but_not_their_noise(tiny: TinyVersions) -> None:
    query = Query("tiny", Aggregate.count(), group_by=("practice_code",), spend=Spend.epsilon(0.1))
    first, second = run(tiny.verified, query), run(tiny.verified, query)
    assert first.key == second.key
    assert [c.value for c in first.cells] != [c.value for c in second.cells]


def test_zcdp_release_uses_gaussian_noise_and_charges_rho(tiny: TinyVersions) -> None:
    release = run(tiny.zcdp, Query("tiny_zcdp", Aggregate.count(), spend=Spend.rho(0.5)))
    assert release.mechanism.value == "discrete_gaussian"
    assert release.cost_units == 500_000_000
    assert release.noise_scale == pytest.approx(4.0)  # rho = k^2 / (2 sigma^2)


@pytest.mark.slow
def test_generated_dataset_answers_a_grouped_query_on_the_publish_time_path(
    small_dataset: DatasetVersion,
) -> None:
    practices = small_dataset.scan_public_table("practices").collect().height
    query = Query(
        "gp_appointments",
        Aggregate.sum("duration_minutes"),
        filters=(Filter("status", "=", ("Attended",)),),
        group_by=("practice_code",),
        spend=Spend.epsilon(0.5),
    )
    shown = preview(small_dataset, query)
    release = run(small_dataset, query)
    assert release.bounding is BoundingMethod.PUBLISH_TIME
    assert len(release.cells) == shown.cells == practices
    assert release.cost_units == 500_000_000
    assert "cut to at most 24 random rows per patient" in shown.truncation_note

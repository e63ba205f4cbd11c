"""Derived answers through real gRPC: a query answered free from a release's cells.

A server of its own (release sharing is switched off and on here) over the session's small
synthetic dataset (10 practices, a year of ISO weeks, bounded at publish). The source
release counts appointments by practice and week; coarser questions add its cells up.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import grpc
import polars as pl
import pytest

from dpgate import AdminClient, AuditClient, Client, QueryResult, count, sum_cells
from dpgate_proto.v1 import query_pb2, query_pb2_grpc
from dpgate_server.ledger.ledger import Ledger
from dpgate_server.store.store import DatasetVersion
from dpgate_shared import noise_sums
from tests.support.analysts import new_analyst

from .conftest import SETUP, Service, start_service


@pytest.fixture(scope="module")
def derived_service(
    small_dataset: DatasetVersion, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    service = start_service(small_dataset, Path(tmp_path_factory.mktemp("derived")))
    yield service
    service.running.stop(grace_seconds=1)


@pytest.fixture(scope="module")
def source(derived_service: Service) -> QueryResult:
    """The release later questions are derived from: counts by practice and week."""
    with Client(derived_service.target, derived_service.tokens["analyst"], timeout=120) as c:
        return c.query(
            count(derived_service.dataset_id).by("practice_code", "week").epsilon(0.5),
            derive="fresh",
        )


DERIVED = "if_as_accurate"
"""Ask for a derived answer when it is no wider than a fresh one (the client asks fresh
unless told)."""


def analyst(service: Service) -> Client:
    return Client(service.target, service.tokens["analyst"], timeout=120)


def remaining(client: Client, dataset_id: str) -> Decimal:
    return client.budget(dataset_id)[0].remaining


def test_a_coarser_question_is_derived_free_marked_and_audited(
    derived_service: Service, source: QueryResult
) -> None:
    dataset = derived_service.dataset_id
    with analyst(derived_service) as client:
        before = remaining(client, dataset)
        answer = client.query(
            count(dataset).by("practice_code").epsilon(Decimal("0.05")), derive=DERIVED
        )
        assert remaining(client, dataset) == before
    weeks = source.frame["week"].n_unique()
    assert answer.derived_from == source.release_id
    assert (answer.charged, answer.release_cost, answer.repeat) == (0, 0, False)
    assert answer.frame.columns == ["practice_code", "value", "ci_low", "ci_high", "cells"]
    assert set(answer.frame["cells"].to_list()) == {weeks}
    by_practice = source.frame.group_by("practice_code").agg(pl.col("value").sum())
    sums = dict(by_practice.iter_rows())
    assert dict(answer.frame.select("practice_code", "value").iter_rows()) == sums
    width = noise_sums.half_width(noise_sums.LAPLACE, source.noise_scale, 0.95, weeks)
    assert (answer.frame["ci_high"] - answer.frame["value"]).to_list() == [width] * len(sums)
    with AuditClient(derived_service.target, derived_service.tokens["auditor"]) as auditor:
        events = auditor.events()
        assert auditor.verify().valid
    derived = [e for e in events if e.detail == f"derived from {source.release_id}, cost 0"]
    assert len(derived) >= 1
    assert (derived[-1].outcome, derived[-1].cost, derived[-1].rpc) == ("answered", 0, "RunQuery")
    assert derived[-1].requester_id == derived_service.analyst_id
    assert '"group_by":["practice_code"]' in derived[-1].query_text


def test_derived_answers_are_listed_like_releases(
    derived_service: Service, source: QueryResult
) -> None:
    with analyst(derived_service) as client:
        answer = client.query(
            count(derived_service.dataset_id).by("practice_code").epsilon(Decimal("0.05")),
            derive=DERIVED,
        )
        again = client.query(
            count(derived_service.dataset_id).by("practice_code").epsilon(Decimal("0.05")),
            derive=DERIVED,
        )
        listed = {r.release_id: r for r in client.releases(derived_service.dataset_id)}
    assert again.release_id == answer.release_id  # the same derivation, the same id
    assert answer.release_id.startswith("drv_")
    item = listed[answer.release_id]
    assert (item.derived_from, item.cost) == (source.release_id, 0)
    assert item.canonical_query == answer.canonical_query
    assert listed[source.release_id].cost == Decimal("0.5")


def test_summing_a_derived_answer_further_stays_exact(
    derived_service: Service, source: QueryResult
) -> None:
    with analyst(derived_service) as client:
        answer = client.query(
            count(derived_service.dataset_id).by("practice_code").epsilon(Decimal("0.05")),
            derive=DERIVED,
        )
    total = sum_cells(answer).frame.row(0, named=True)
    cells = source.frame.height
    assert total["cells"] == cells
    width = noise_sums.half_width(noise_sums.LAPLACE, source.noise_scale, 0.95, cells)
    assert total["ci_high"] - total["value"] == width


def test_a_fresh_release_is_charged_by_default_and_on_request(
    derived_service: Service, source: QueryResult
) -> None:
    question = count(derived_service.dataset_id).by("practice_code").epsilon(Decimal("0.051"))
    with analyst(derived_service) as client:
        before = remaining(client, derived_service.dataset_id)
        fresh = client.query(question, derive="fresh")
        assert remaining(client, derived_service.dataset_id) == before - Decimal("0.051")
        default = client.query(question.epsilon(Decimal("0.055")))
    assert (fresh.derived_from, fresh.charged) == ("", Decimal("0.051"))
    assert (default.derived_from, default.charged) == ("", Decimal("0.055"))
    assert "cells" not in fresh.frame.columns


def test_a_less_accurate_derived_answer_is_given_only_if_any_is_accepted(
    derived_service: Service, source: QueryResult
) -> None:
    question = count(derived_service.dataset_id).by("week").epsilon(Decimal("2.5"))
    with analyst(derived_service) as client:
        preview = client.preview(question)
        assert preview.derived is not None
        assert preview.derived.half_width > preview.half_width
        wide = client.query(question, derive="if_any")
        before = remaining(client, derived_service.dataset_id)
        assert (wide.derived_from, wide.charged) == (source.release_id, 0)
        assert client.query(question, derive=DERIVED).charged == Decimal("2.5")  # wider: fresh
        assert remaining(client, derived_service.dataset_id) == before - Decimal("2.5")


def test_preview_shows_the_free_derived_option_beside_the_fresh_one(
    derived_service: Service, source: QueryResult
) -> None:
    practice = source.frame["practice_code"][0]
    question = count(derived_service.dataset_id).where(practice_code=practice).by("week")
    question = question.epsilon(Decimal("0.02"))  # only the source separates these cells
    with analyst(derived_service) as client:
        before = remaining(client, derived_service.dataset_id)
        preview = client.preview(question)
        assert remaining(client, derived_service.dataset_id) == before
    assert preview.derived is not None
    assert preview.derived.derived_from == source.release_id
    weeks = source.frame["week"].n_unique()
    assert (preview.derived.cells, preview.derived.summed_cells) == (weeks, 1)
    assert preview.derived.half_width == noise_sums.half_width(
        noise_sums.LAPLACE, source.noise_scale, 0.95, 1
    )
    assert (preview.spend, preview.cells) == (Decimal("0.02"), weeks)
    assert preview.half_width > preview.derived.half_width


def test_filters_the_cells_do_not_separate_take_the_charged_path(
    derived_service: Service, source: QueryResult
) -> None:
    question = (
        count(derived_service.dataset_id).where(status="DNA").by("practice_code").epsilon(0.052)
    )
    with analyst(derived_service) as client:
        assert client.preview(question).derived is None
        answer = client.query(question, derive="if_any")
    assert (answer.derived_from, answer.charged) == ("", Decimal("0.052"))


def test_a_selection_of_grouped_values_is_derived(
    derived_service: Service, source: QueryResult
) -> None:
    weeks = sorted(source.frame["week"].unique().to_list())[10:14]
    question = (
        count(derived_service.dataset_id).where_in("week", weeks).by("practice_code").epsilon(0.01)
    )
    with analyst(derived_service) as client:
        answer = client.query(question, derive=DERIVED)
    assert answer.derived_from == source.release_id
    assert set(answer.frame["cells"].to_list()) == {4}
    chosen = source.frame.filter(source.frame["week"].is_in(weeks))
    assert answer.frame["value"].sum() == chosen["value"].sum()


def test_with_sharing_off_another_requesters_release_is_not_used(
    derived_service: Service, source: QueryResult
) -> None:
    with Ledger.open(derived_service.ledger_path) as ledger:
        _, token = new_analyst(
            ledger, derived_service.dataset_id, 1, prefix="other", organisation="Other",
            request=SETUP,
        )  # fmt: skip
    # by practice: the other requester's own releases (this one) cannot answer it
    question = count(derived_service.dataset_id).by("practice_code").epsilon(Decimal("0.011"))
    admin = AdminClient(derived_service.target, derived_service.tokens["admin"])
    with admin, Client(derived_service.target, token, timeout=120) as other:
        try:
            assert admin.set_release_sharing(derived_service.dataset_id, False) is False
            assert other.preview(question).derived is None
            alone = other.query(question, derive="if_any")
        finally:
            assert admin.set_release_sharing(derived_service.dataset_id, True) is True
        assert other.preview(question.epsilon(Decimal("0.012"))).derived is not None
        shared = other.query(question.epsilon(Decimal("0.012")), derive=DERIVED)
    assert (alone.derived_from, alone.charged) == ("", Decimal("0.011"))
    assert shared.derived_from.startswith("rel_")
    assert shared.derived_from != alone.release_id  # not its own: the source, shared
    assert shared.charged == 0


def test_a_client_from_before_gets_a_fresh_release_and_per_cell_counts_travel(
    derived_service: Service, source: QueryResult
) -> None:
    question = count(derived_service.dataset_id).by("practice_code").epsilon(Decimal("0.053"))
    metadata = (("authorization", f"Bearer {derived_service.tokens['analyst']}"),)
    with grpc.insecure_channel(derived_service.target) as channel:
        stub = query_pb2_grpc.QueryServiceStub(channel)
        old = list(
            stub.RunQuery(
                query_pb2.RunQueryRequest(query=question.to_proto(), idempotency_key="old-1"),
                metadata=metadata,
            )
        )
        derived = list(
            stub.RunQuery(
                query_pb2.RunQueryRequest(
                    query=question.epsilon(Decimal("0.054")).to_proto(),
                    idempotency_key="new-1",
                    derive=query_pb2.DERIVE_PREFERENCE_IF_ANY,
                ),
                metadata=metadata,
            )
        )
    assert old[0].header.derived_from == ""
    assert old[0].header.charged.nano_units == 53_000_000
    assert derived[0].header.derived_from == source.release_id
    cells = [c for part in derived[1:] for c in part.cells.cells]
    weeks = source.frame["week"].n_unique()
    assert cells
    assert all(c.summed_cells == weeks for c in cells)
    assert all(c.summed_cells == 0 for part in old[1:] for c in part.cells.cells)

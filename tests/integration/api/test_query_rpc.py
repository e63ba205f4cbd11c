"""A planner's DP answers over the wire: the real client, server, workers and ledger."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from polars.testing import assert_frame_equal

from dpgate import (
    BudgetExhaustedError,
    Client,
    DpgateError,
    InvalidQueryError,
    OverloadedError,
    QueryResult,
    QuerySpec,
    count,
    total,
)
from dpgate._convert import query_result
from dpgate_proto.v1 import query_pb2, query_pb2_grpc
from dpgate_server.ledger.ledger import Ledger
from dpgate_server.ledger.model import Outcome, Role
from dpgate_server.spend import to_units_floor
from dpgate_server.store.store import DatasetVersion

from .conftest import SETUP, Service, start_service


@pytest.fixture
def client(service: Service) -> Iterator[Client]:
    with Client(service.target, token=service.tokens["analyst"], timeout=120) as connected:
        yield connected


def new_analyst(service: Service, epsilon: float) -> str:
    """A fresh analyst with its own allocation; returns its token."""
    requester_id = f"analyst-{uuid.uuid4().hex[:8]}"
    with Ledger.open_sqlite(service.ledger_path) as ledger:
        ledger.admin.create_requester(
            requester_id, name="A", organisation="Org", agreement="DSA", request=SETUP
        )
        ledger.admin.grant_allocation(
            requester_id,
            service.dataset_id,
            to_units_floor(epsilon),
            request=SETUP,
            purpose="testing",
            agreement="DSA-TEST",
        )
        return ledger.admin.issue_token(requester_id, Role.ANALYST, request=SETUP).token


def remaining(client: Client, dataset_id: str) -> Decimal:
    [budget] = client.budget(dataset_id)
    return budget.remaining


def test_count_by_practice_has_every_practice_and_charges_epsilon(
    client: Client, service: Service, small_dataset: DatasetVersion
) -> None:
    before = remaining(client, service.dataset_id)
    result = client.query(count(service.dataset_id).by("practice_code").epsilon(0.25))
    practices = set(small_dataset.metadata.column("practice_code").values or ())
    assert set(result.frame["practice_code"]) == practices
    assert result.frame.columns == ["practice_code", "value", "ci_low", "ci_high"]
    assert (result.frame["ci_low"] < result.frame["value"]).all()
    assert (result.frame["value"] < result.frame["ci_high"]).all()
    assert result.charged == Decimal("0.25")
    assert not result.repeat
    assert remaining(client, service.dataset_id) == before - Decimal("0.25")
    assert result.remaining == before - Decimal("0.25")


def test_dna_count_by_practice_and_week_needs_no_protobuf(client: Client, service: Service) -> None:
    query = count(service.dataset_id).where(status="DNA").by("practice_code", "week").epsilon(0.2)
    result = client.query(query)
    assert result.frame.height == result.frame.select("practice_code", "week").n_unique()
    assert result.frame.height > 10 * 50


def test_sum_of_duration_is_released_with_its_interval(client: Client, service: Service) -> None:
    result = client.query(total(service.dataset_id, "duration_minutes").epsilon(0.2))
    assert result.frame.height == 1
    assert result.frame["ci_high"][0] - result.frame["ci_low"][0] > 0
    assert "laplace" in result.mechanism


def test_repeat_is_free_identical_and_does_not_run_the_query(
    client: Client, service: Service
) -> None:
    query = count(service.dataset_id).by("mode").epsilon(0.3)
    first = client.query(query)
    completed_before = service.running.pool.stats().completed
    again = client.query(query)
    assert again.repeat
    assert again.charged == 0
    assert again.release_id == first.release_id
    assert again.frame.equals(first.frame)
    assert service.running.pool.stats().completed == completed_before


def test_a_query_is_read_on_the_calling_thread_without_starting_one(
    client: Client, service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    # gRPC's default starts a thread per server-streaming call to drive it; a repeat then
    # costs a thread start on the client (issue 17's cached-question figures).
    query = count(service.dataset_id).by("mode").epsilon(0.35)
    client.query(query)
    caller, started = threading.current_thread(), []
    start = threading.Thread.start

    def recording(thread: threading.Thread) -> None:
        if threading.current_thread() is caller:
            started.append(thread.name)
        start(thread)

    monkeypatch.setattr(threading.Thread, "start", recording)
    again = client.query(query)
    assert again.repeat
    assert started == []


def test_other_confidence_level_is_the_same_release_with_other_intervals(
    client: Client, service: Service
) -> None:
    query = count(service.dataset_id).by("status").epsilon(0.3)
    first = client.query(query)
    wider = client.query(query.confidence(0.99))
    assert wider.repeat
    assert wider.charged == 0
    assert wider.release_id == first.release_id
    assert wider.frame["value"].equals(first.frame["value"])
    assert (
        (wider.frame["ci_high"] - wider.frame["ci_low"])
        > (first.frame["ci_high"] - first.frame["ci_low"])
    ).all()


def _per_cell_answer(service: Service, query: QuerySpec) -> QueryResult:
    """The answer as a client before the columnar format asked for it (no cell_format)."""
    metadata = (("authorization", f"Bearer {service.tokens['analyst']}"),)
    request = query_pb2.RunQueryRequest(query=query.to_proto(), idempotency_key=uuid.uuid4().hex)
    with grpc.insecure_channel(service.target) as channel:
        stub = query_pb2_grpc.QueryServiceStub(channel)
        parts = list(stub.RunQuery(request, metadata=metadata, timeout=120))
    assert all(p.WhichOneof("part") in ("header", "cells") for p in parts)
    return query_result(parts)


@pytest.mark.parametrize(
    "group_by",
    [(), ("mode",), ("practice_code", "week"), ("appointment_date", "hour"), ("month", "status")],
)
def test_columnar_answer_is_the_frame_per_cell_messages_give(
    client: Client, service: Service, group_by: tuple[str, ...]
) -> None:
    query = count(service.dataset_id).by(*group_by).epsilon(0.31)
    columnar = client.query(query)
    per_cell = _per_cell_answer(service, query)
    assert per_cell.repeat
    assert per_cell.release_id == columnar.release_id
    assert columnar.frame.columns == [*columnar.group_by, "value", "ci_low", "ci_high"]
    assert_frame_equal(columnar.frame, per_cell.frame, check_dtypes=True, check_exact=True)
    wider = client.query(query.confidence(0.8))
    assert_frame_equal(
        wider.frame, _per_cell_answer(service, query.confidence(0.8)).frame, check_exact=True
    )


def test_retried_call_with_the_same_idempotency_key_is_charged_once(
    client: Client, service: Service
) -> None:
    before = remaining(client, service.dataset_id)
    query = count(service.dataset_id).by("hcp_type").epsilon(0.15)
    key = uuid.uuid4().hex
    first = client.query(query, idempotency_key=key)
    second = client.query(query, idempotency_key=key)
    assert second.release_id == first.release_id
    # The retry is told what the first call was told: charged 0.15, not a free repeat.
    assert (second.charged, second.repeat, second.remaining) == (
        first.charged,
        False,
        first.remaining,
    )
    assert remaining(client, service.dataset_id) == before - Decimal("0.15")


def test_exhausted_budget_raises_with_figures_and_charges_nothing(service: Service) -> None:
    token = new_analyst(service, epsilon=0.5)
    with Client(service.target, token=token, timeout=120) as poor:
        with pytest.raises(BudgetExhaustedError) as caught:
            poor.query(count(service.dataset_id).by("region_code").epsilon(0.75))
        assert caught.value.requested == Decimal("0.75")
        assert caught.value.remaining == Decimal("0.5")
        assert remaining(poor, service.dataset_id) == Decimal("0.5")
        assert poor.releases() == []


def test_preview_is_free_and_matches_the_release(client: Client, service: Service) -> None:
    query = count(service.dataset_id).by("sex").epsilon(0.4)
    before = remaining(client, service.dataset_id)
    preview = client.preview(query)
    assert remaining(client, service.dataset_id) == before
    assert preview.spend == Decimal("0.4")
    assert preview.cells == 2
    result = client.query(query)
    width = result.frame["ci_high"][0] - result.frame["ci_low"][0]
    assert width == pytest.approx(2 * preview.half_width)
    assert result.noise_scale == pytest.approx(preview.noise_scale)


def test_preview_resolves_a_target_accuracy_to_a_spend(client: Client, service: Service) -> None:
    preview = client.preview(count(service.dataset_id).by("sex").accuracy(500))
    assert 0 < preview.spend < 1
    assert preview.half_width <= 500


def test_invalid_query_names_reason_and_field_and_charges_nothing(
    client: Client, service: Service
) -> None:
    before = remaining(client, service.dataset_id)
    with pytest.raises(InvalidQueryError) as caught:
        client.query(count(service.dataset_id).by("nhs_number").epsilon(0.1))
    assert caught.value.reason == "UNKNOWN_COLUMN"
    assert "group_by" in caught.value.field
    assert remaining(client, service.dataset_id) == before


def test_grouping_on_the_patient_key_is_refused(client: Client, service: Service) -> None:
    with pytest.raises(InvalidQueryError) as caught:
        client.query(count(service.dataset_id).by("patient_key").epsilon(0.1))
    assert caught.value.reason == "PRIVATE_COLUMN"


def test_releases_lists_what_was_paid_for(client: Client, service: Service) -> None:
    result = client.query(count(service.dataset_id).by("age_band").epsilon(0.1))
    listed = {r.release_id: r for r in client.releases(service.dataset_id)}
    assert result.release_id in listed
    assert listed[result.release_id].cost == Decimal("0.1")


def test_release_pages_neither_repeat_nor_skip_a_release_made_meanwhile(
    service: Service,
) -> None:
    token = new_analyst(service, epsilon=1)
    metadata = (("authorization", f"Bearer {token}"),)
    # A spend no other test asks for, so every query is a new release of this analyst's own.
    epsilon = Decimal("0.1") + Decimal(uuid.uuid4().int % 10_000) / 10**8
    with (
        Client(service.target, token=token, timeout=120) as analyst,
        grpc.insecure_channel(service.target) as channel,
    ):
        made = [
            analyst.query(count(service.dataset_id).by(column).epsilon(epsilon)).release_id
            for column in ("sex", "age_band", "mode")
        ]
        stub = query_pb2_grpc.QueryServiceStub(channel)
        first = stub.ListReleases(
            query_pb2.ListReleasesRequest(page_size=2), metadata=metadata, timeout=30
        )
        analyst.query(count(service.dataset_id).by("region_code").epsilon(epsilon))
        second = stub.ListReleases(
            query_pb2.ListReleasesRequest(page_size=2, page_token=first.next_page_token),
            metadata=metadata,
            timeout=30,
        )
    listed = [r.release_id for r in (*first.releases, *second.releases)]
    assert listed == made[::-1]
    assert second.next_page_token == ""


def test_query_past_its_deadline_is_cancelled_free_and_health_answers(
    small_dataset: DatasetVersion, tmp_path: Path
) -> None:
    slow = start_service(small_dataset, tmp_path, workers=1, query_timeout_seconds=0.001)
    try:
        with Client(slow.target, token=slow.tokens["analyst"], timeout=120) as client:
            before = remaining(client, slow.dataset_id)
            with pytest.raises(DpgateError) as caught:
                client.query(count(slow.dataset_id).by("practice_code").epsilon(0.5))
            assert caught.value.code == "DEADLINE_EXCEEDED"
            assert caught.value.reason == "QUERY_TIMEOUT"
            assert remaining(client, slow.dataset_id) == before
            with grpc.insecure_channel(slow.target) as channel:
                reply = health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=10
                )
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        slow.running.stop(grace_seconds=1)


def test_full_queue_answers_overloaded_not_budget_exhausted(
    small_dataset: DatasetVersion, tmp_path: Path
) -> None:
    busy = start_service(small_dataset, tmp_path, max_queued_queries=0)
    outcomes: list[str] = []
    hints: list[float | None] = []
    lock = threading.Lock()
    start = threading.Barrier(8)

    def ask(epsilon: float) -> None:
        with Client(busy.target, token=busy.tokens["analyst"], timeout=120, retries=0) as c:
            start.wait()
            try:
                c.query(count(busy.dataset_id).by("practice_code", "week").epsilon(epsilon))
                outcome = "ok"
            except OverloadedError as error:
                outcome = "overloaded"
                with lock:
                    hints.append(error.retry_after)
            with lock:
                outcomes.append(outcome)

    try:
        threads = [threading.Thread(target=ask, args=(0.01 * (i + 1),)) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert "overloaded" in outcomes
        assert "ok" in outcomes
        assert all(hint is not None and hint > 0 for hint in hints)
        with Client(busy.target, token=busy.tokens["analyst"]) as c:
            spent = 5 - remaining(c, busy.dataset_id)
            assert len(c.releases()) == outcomes.count("ok")
        assert spent > 0
    finally:
        busy.running.stop(grace_seconds=1)


def test_rate_limit_answers_unavailable_with_a_hint_not_budget(
    small_dataset: DatasetVersion, tmp_path: Path
) -> None:
    limited = start_service(small_dataset, tmp_path, workers=1, requests_per_second=0.01, burst=2)
    try:
        with Client(limited.target, token=limited.tokens["analyst"], retries=0) as client:
            client.datasets()
            client.datasets()
            with pytest.raises(OverloadedError) as caught:
                client.datasets()
        assert caught.value.reason == "RATE_LIMITED"
        assert caught.value.retry_after is not None
        assert caught.value.retry_after > 1
    finally:
        limited.running.stop(grace_seconds=1)


def test_a_refused_query_is_audited_with_what_it_asked(client: Client, service: Service) -> None:
    with pytest.raises(InvalidQueryError):
        client.query(count(service.dataset_id).by("date_of_birth").epsilon(0.1))
    with Ledger.open_sqlite(service.ledger_path) as ledger:
        events = ledger.list_events(after_seq=max(0, ledger.head().count - 20), limit=100)
    refused = [e for e in events if e.rpc == "RunQuery" and e.outcome is Outcome.INVALID]
    assert refused
    assert "date_of_birth" in refused[-1].query_text
    assert refused[-1].detail == "UNKNOWN_COLUMN"

"""Question sets over the real server and client (issue 18 item 4).

A set is previewed (its total, each member's interval, a split of a total that equalises
relative accuracy) and run all or nothing: every member released and the sum charged in
one ledger transaction, or nothing released and nothing charged. Each test has its own
analyst on one server started for this module (its own ledger), so budgets are exact.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import psutil
import pytest

from dpgate import (
    BudgetExhaustedError,
    Client,
    DpgateError,
    InvalidQueryError,
    PreviewResult,
    QuerySpec,
    count,
    total,
)
from dpgate_server.ledger.ledger import Ledger
from dpgate_server.ledger.model import RequestInfo
from dpgate_server.store.store import DatasetVersion
from tests.support.analysts import new_analyst

from .conftest import Service, start_service

SETUP = RequestInfo(request_id="question-sets-setup", rpc="test-setup")


@pytest.fixture(scope="module")
def sets_service(
    small_dataset: DatasetVersion, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    service = start_service(small_dataset, tmp_path_factory.mktemp("question_sets"))
    yield service
    service.running.stop(grace_seconds=1)


def analyst(service: Service, epsilon: float) -> tuple[str, Client]:
    with Ledger.open(service.ledger_path) as ledger:
        requester_id, token = new_analyst(
            ledger,
            service.dataset_id,
            epsilon,
            prefix="planner",
            organisation="NHS England",
            request=SETUP,
        )
    return requester_id, Client(service.target, token=token, timeout=120, retries=0)


def remaining(client: Client, dataset_id: str) -> Decimal:
    [budget] = client.budget(dataset_id)
    return budget.remaining


def released(service: Service, requester_id: str) -> list[str]:
    """The release ids the ledger holds for `requester_id`."""
    with Ledger.open(service.ledger_path) as ledger:
        page = ledger.page_releases(requester_id, None, after=None, limit=1000)
    return [r.release_id for r in page.releases if r.requester_id == requester_id]


SPENDS = (Decimal("0.2"), Decimal("0.1"), Decimal("0.1"))


def questions(dataset_id: str, test: int) -> list[QuerySpec]:
    """Three shapes of very different cell sizes (a set's typical mix), at SPENDS plus
    `test` nano-epsilon each: every test asks new questions (releases are shared between
    requesters, so another test's would be free repeats)."""
    extra = Decimal(test).scaleb(-9)
    first, second, third = (spend + extra for spend in SPENDS)
    return [
        count(dataset_id).by("practice_code", "month").epsilon(first),
        count(dataset_id).by("mode").epsilon(second),
        total(dataset_id, "duration_minutes").by("hcp_type").epsilon(third),
    ]


def costs(test: int) -> list[Decimal]:
    return [spend + Decimal(test).scaleb(-9) for spend in SPENDS]


def test_preview_total_is_the_sum_and_the_split_equalises_relative_widths(
    sets_service: Service,
) -> None:
    _, client = analyst(sets_service, 1)
    with client:
        asked = questions(sets_service.dataset_id, 1)
        expected = [4_000.0, 150_000.0, 1_500_000.0]
        preview = client.preview_set(asked, total_epsilon="0.9", expected=expected)
        singles = [client.preview(q) for q in asked]

    assert preview.accounting == "pure_dp"
    assert preview.stated_total == sum(p.spend for p in singles) == sum(costs(1))
    for member, single in zip(preview.members, singles, strict=True):
        assert member.stated.half_width == single.half_width
    shares = preview.split_spends
    assert sum(shares) == Decimal("0.9")  # exactly the total, in ledger units
    assert len(set(shares)) == 3  # very different cells get very different shares
    relative = [m.split_relative_half_width for m in preview.members]
    assert all(r is not None for r in relative)
    widths = [r for r in relative if r is not None]
    assert preview.split_relative_half_width is not None
    for width in widths:  # equal up to integer half-widths (hundreds of units here)
        assert width == pytest.approx(preview.split_relative_half_width, rel=0.03)
    # Each member's split preview is the member previewed alone at its share.
    for member, asked_alone in zip(preview.members, asked, strict=True):
        assert member.split is not None
        alone = client_preview_at(sets_service, asked_alone.epsilon(member.split.spend))
        assert member.split.half_width == alone.half_width


def client_preview_at(service: Service, query: QuerySpec) -> PreviewResult:
    _, client = analyst(service, 0)
    with client:
        return client.preview(query)


def test_preview_refuses_a_total_in_the_other_measure(sets_service: Service) -> None:
    _, client = analyst(sets_service, 1)
    with client, pytest.raises(InvalidQueryError) as refused:
        client.preview_set(questions(sets_service.dataset_id, 2), total_rho="0.5")
    assert refused.value.reason == "WRONG_ACCOUNTING"
    assert "epsilon" in refused.value.message


def test_preview_refuses_expected_values_that_do_not_match(sets_service: Service) -> None:
    _, client = analyst(sets_service, 1)
    with client, pytest.raises(InvalidQueryError) as refused:
        client.preview_set(questions(sets_service.dataset_id, 3), total_epsilon=1, expected=[1.0])
    assert refused.value.reason == "BAD_VALUE"


def test_run_set_debits_exactly_the_sum_once(sets_service: Service) -> None:
    requester_id, client = analyst(sets_service, 1)
    dataset = sets_service.dataset_id
    with client:
        results = client.run_set(questions(dataset, 4))
        left = remaining(client, dataset)

    assert [r.charged for r in results] == costs(4)
    assert left == 1 - sum(costs(4))
    assert not any(r.repeat for r in results)
    assert sorted(released(sets_service, requester_id)) == sorted(r.release_id for r in results)
    assert [r.group_by for r in results] == [("month", "practice_code"), ("mode",), ("hcp_type",)]
    with Ledger.open(sets_service.ledger_path) as ledger:  # found by version to derive from
        versions = {ledger.get_release(r.release_id).dataset_version for r in results}
    assert versions == {results[0].dataset_version}


def test_a_retried_set_replays_its_first_answer_and_is_charged_once(
    sets_service: Service,
) -> None:
    requester_id, client = analyst(sets_service, 1)
    dataset = sets_service.dataset_id
    key = uuid.uuid4().hex
    with client:
        first = client.run_set(questions(dataset, 5), idempotency_key=key)
        again = client.run_set(questions(dataset, 5), idempotency_key=key)
        left = remaining(client, dataset)

    assert [r.release_id for r in again] == [r.release_id for r in first]
    assert [r.charged for r in again] == [r.charged for r in first]  # the first call's answer
    assert [r.frame.equals(f.frame) for r, f in zip(again, first, strict=True)] == [True] * 3
    assert left == 1 - sum(costs(5))
    assert len(released(sets_service, requester_id)) == 3


def test_members_already_released_are_free_repeats(sets_service: Service) -> None:
    requester_id, client = analyst(sets_service, 1)
    dataset = sets_service.dataset_id
    asked = questions(dataset, 7)
    with client:
        alone = client.query(asked[1])
        results = client.run_set(asked)
        left = remaining(client, dataset)

    assert results[1].repeat
    assert results[1].charged == 0
    assert results[1].release_id == alone.release_id
    assert left == 1 - sum(costs(7))
    assert len(released(sets_service, requester_id)) == 3


def test_an_invalid_member_releases_and_charges_nothing(sets_service: Service) -> None:
    requester_id, client = analyst(sets_service, 1)
    dataset = sets_service.dataset_id
    asked = [*questions(dataset, 8), count(dataset).by("patient_key").epsilon(Decimal("0.1"))]
    with client:
        with pytest.raises(InvalidQueryError) as refused:
            client.run_set(asked)
        left = remaining(client, dataset)

    assert "question set member 3" in refused.value.message
    assert refused.value.metadata.get("member") == "3"
    assert left == Decimal("1")
    assert released(sets_service, requester_id) == []


def test_a_budget_short_of_the_sum_is_refused_and_charges_nothing(
    sets_service: Service,
) -> None:
    requester_id, client = analyst(sets_service, 0.35)  # pays any member, not all three
    dataset = sets_service.dataset_id
    with client:
        with pytest.raises(BudgetExhaustedError) as refused:
            client.run_set(questions(dataset, 9))
        left = remaining(client, dataset)

    assert refused.value.requested == sum(costs(9))
    assert refused.value.remaining == Decimal("0.349999999")  # 0.35 granted as a float
    assert left == Decimal("0.349999999")
    assert released(sets_service, requester_id) == []


def test_a_worker_killed_mid_set_releases_and_charges_nothing(
    small_dataset: DatasetVersion, tmp_path: Path
) -> None:
    """One worker; once a member has been computed, the worker computing the next is
    SIGKILLed: the set fails with WORKER_FAILED, and the member already computed is not
    released either. The server then runs the same set in full."""
    service = start_service(small_dataset, tmp_path, workers=1)
    try:
        requester_id, client = analyst(service, 2)
        dataset = service.dataset_id
        # per-query truncation keeps these in a worker long enough to be caught mid-query
        heavy = [
            count(dataset).by("practice_code", "week").contributions(3).epsilon(Decimal(e))
            for e in ("0.11", "0.12", "0.13", "0.14", "0.15", "0.16")
        ]
        pool = service.running.pool
        completed_before = pool.stats().completed
        done = threading.Event()
        killed: list[int] = []

        def kill_after_first_member() -> None:
            while not done.is_set():
                stats = pool.stats()
                if stats.completed > completed_before and stats.busy:
                    for pid in stats.worker_pids:
                        psutil.Process(pid).kill()
                        killed.append(pid)
                    return
                done.wait(0.005)

        killer = threading.Thread(target=kill_after_first_member)
        killer.start()
        with client:
            try:
                with pytest.raises(DpgateError) as failed:
                    client.run_set(heavy)
            finally:
                done.set()
                killer.join()
            left = remaining(client, dataset)
            assert killed, "no worker was caught mid-set"
            assert failed.value.reason == "WORKER_FAILED"
            assert "question set member" in failed.value.message
            assert left == Decimal("2")
            assert released(service, requester_id) == []

            results = client.run_set(heavy)
            assert sum(r.charged for r in results) == Decimal("0.81")
            assert remaining(client, dataset) == Decimal("2") - Decimal("0.81")
    finally:
        service.running.stop(grace_seconds=1)

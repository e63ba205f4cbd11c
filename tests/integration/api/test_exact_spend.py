"""Amounts cross the real wire exactly, both ways, and old clients' doubles still work.

client -> wire -> ledger -> wire -> client, with the real server on port 0: an amount
with at most 9 decimal places comes back equal, whether granted by an administrator or
asked for in a query.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from decimal import Decimal

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dpgate import AdminClient, BudgetExhaustedError, Client, count
from dpgate_proto.v1 import query_pb2, query_pb2_grpc

from .conftest import Service

EXAMPLES = settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def nine_places(low: str, high: str) -> st.SearchStrategy[Decimal]:
    return st.decimals(min_value=Decimal(low), max_value=Decimal(high), places=9, allow_nan=False)


@pytest.fixture(scope="module")
def admin(service: Service) -> Iterator[AdminClient]:
    with AdminClient(service.target, service.tokens["admin"]) as connected:
        yield connected


def granted_analyst(admin: AdminClient, service: Service, epsilon: Decimal | str) -> str:
    """A new analyst granted `epsilon` through the admin client; returns its token."""
    planner = admin.create_requester(f"Exact {uuid.uuid4().hex[:6]}", "Leeds ICB", "DSA-0042")
    admin.grant(
        planner.requester_id,
        service.dataset_id,
        epsilon=epsilon,
        purpose="testing",
        agreement="DSA-TEST",
    )
    return admin.issue_token(planner.requester_id, "analyst").token


@EXAMPLES
@given(amount=nine_places("0.000000001", "1000000"))
def test_a_granted_amount_comes_back_to_the_analyst_exactly(
    admin: AdminClient, service: Service, amount: Decimal
) -> None:
    token = granted_analyst(admin, service, amount)
    with Client(service.target, token=token) as analyst:
        [budget] = analyst.budget(service.dataset_id)
    assert budget.allocated == amount
    assert budget.spent == 0


@EXAMPLES
@given(amount=nine_places("0.000000001", "10"))
def test_a_query_spend_comes_back_from_preview_exactly(service: Service, amount: Decimal) -> None:
    with Client(service.target, token=service.tokens["analyst"]) as analyst:
        preview = analyst.preview(count(service.dataset_id).by("sex").epsilon(amount))
    assert preview.spend == amount
    assert isinstance(preview.spend, Decimal)


def test_charged_and_remaining_are_exact_decimals(admin: AdminClient, service: Service) -> None:
    token = granted_analyst(admin, service, "1.000000001")
    with Client(service.target, token=token, timeout=120) as analyst:
        result = analyst.query(count(service.dataset_id).by("sex").epsilon("0.300000001"))
        [budget] = analyst.budget(service.dataset_id)
    assert isinstance(result.charged, Decimal)
    assert result.charged <= Decimal("0.300000001")
    assert result.remaining == Decimal("1.000000001") - result.charged == budget.remaining


def _old_client_query(service: Service, **spend: float) -> query_pb2.Query:
    """A query as the previous client version built it: the spend as a double."""
    message = query_pb2.Query(dataset_id=service.dataset_id, group_by=["sex"], **spend)
    message.aggregate.function = query_pb2.AGGREGATE_FUNCTION_COUNT
    assert message.WhichOneof("spend") in spend
    return message


def test_an_old_clients_double_epsilon_is_previewed_exactly(service: Service) -> None:
    with grpc.insecure_channel(service.target) as channel:
        stub = query_pb2_grpc.QueryServiceStub(channel)
        reply = stub.PreviewQuery(
            query_pb2.PreviewQueryRequest(query=_old_client_query(service, epsilon=0.1)),
            metadata=(("authorization", f"Bearer {service.tokens['analyst']}"),),
            timeout=60,
        )
    assert reply.spend.nano_units == 100_000_000


def test_an_old_clients_double_epsilon_is_charged_what_it_wrote(
    admin: AdminClient, service: Service
) -> None:
    token = granted_analyst(admin, service, "1")
    with grpc.insecure_channel(service.target) as channel:
        stub = query_pb2_grpc.QueryServiceStub(channel)
        parts = list(
            stub.RunQuery(
                query_pb2.RunQueryRequest(query=_old_client_query(service, epsilon=0.3)),
                metadata=(("authorization", f"Bearer {token}"),),
                timeout=120,
            )
        )
    header = parts[0].header
    assert header.release_cost.nano_units <= 300_000_000
    assert header.charged.nano_units + header.remaining.nano_units == 1_000_000_000


def test_budget_exhausted_says_epsilon_not_units(admin: AdminClient, service: Service) -> None:
    token = granted_analyst(admin, service, "0.5")
    with Client(service.target, token=token) as poor, pytest.raises(BudgetExhaustedError) as caught:
        poor.query(count(service.dataset_id).by("region_code").epsilon("0.75"))
    assert "the query costs epsilon 0.75 but only epsilon 0.5 remains" in caught.value.message
    assert "unit" not in caught.value.message
    assert (caught.value.requested, caught.value.remaining) == (Decimal("0.75"), Decimal("0.5"))

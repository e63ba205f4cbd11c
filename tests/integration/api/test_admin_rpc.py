"""Budget administration over the wire: the real AdminClient, server and ledger."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from decimal import Decimal

import grpc
import polars as pl
import pytest

from dpgate._admin import AdminClient
from dpgate._admin_types import Requester
from dpgate._audit import AuditClient
from dpgate._client import Client
from dpgate._query import count
from dpgate.errors import (
    AuthenticationError,
    DpgateError,
    InvalidRequestError,
    NotFoundError,
    PermissionDeniedError,
    PreconditionFailedError,
    from_rpc_error,
)
from dpgate_proto.v1 import admin_pb2, admin_pb2_grpc, types_pb2
from dpgate_server.ledger.ledger import Ledger

from .conftest import ANALYST_EPSILON, DATASET_CAP_EPSILON, Service


@pytest.fixture(scope="module")
def admin(service: Service) -> Iterator[AdminClient]:
    with AdminClient(service.target, service.tokens["admin"]) as connected:
        yield connected


@pytest.fixture(scope="module")
def audit(service: Service) -> Iterator[AuditClient]:
    with AuditClient(service.target, service.tokens["auditor"]) as connected:
        yield connected


@pytest.fixture(scope="module")
def analyst_spent(service: Service) -> Decimal:
    """What analyst-1 has spent after one real query (so the dataset has spending)."""
    with Client(service.target, service.tokens["analyst"], timeout=120) as client:
        client.query(count(service.dataset_id).by("hour").epsilon(0.5))
        [budget] = client.budget(service.dataset_id)
    assert budget.spent > 0
    return budget.spent


def fresh_requester(admin: AdminClient) -> Requester:
    return admin.create_requester(f"Planner {uuid.uuid4().hex[:6]}", "Leeds ICB", "DSA-0042")


def raw_admin_call(service: Service, rpc: str, request: object) -> DpgateError:
    """Send a request our client would never build; return the error it raises."""
    with grpc.insecure_channel(service.target) as channel:
        stub = admin_pb2_grpc.AdminServiceStub(channel)
        metadata = (("authorization", f"Bearer {service.tokens['admin']}"),)
        try:
            getattr(stub, rpc)(request, metadata=metadata, timeout=30)
        except grpc.RpcError as error:
            return from_rpc_error(error)
    raise AssertionError(f"{rpc} accepted {request}")


# requesters


def test_created_requester_is_enabled_and_listed(admin: AdminClient) -> None:
    created = admin.create_requester("NHS Leeds: Analytics", "Leeds ICB", "DSA-0042")
    assert created.requester_id.startswith("nhs-leeds-analytics-")
    assert created.enabled
    assert (created.name, created.organisation, created.purpose) == (
        "NHS Leeds: Analytics",
        "Leeds ICB",
        "DSA-0042",
    )
    assert created in admin.requesters()


def test_two_requesters_with_one_name_get_different_ids(admin: AdminClient) -> None:
    first = admin.create_requester("Same Name", "Org", "DSA-1")
    second = admin.create_requester("Same Name", "Org", "DSA-1")
    assert first.requester_id != second.requester_id


def test_requester_without_purpose_is_refused_naming_the_field(admin: AdminClient) -> None:
    with pytest.raises(InvalidRequestError) as refused:
        admin.create_requester("Someone", "Org", "  ")
    assert refused.value.reason == "MISSING_FIELD"
    assert refused.value.field == "purpose"


def test_disabling_a_requester_stops_its_tokens_at_once(
    admin: AdminClient, service: Service
) -> None:
    planner = fresh_requester(admin)
    issued = admin.issue_token(planner.requester_id, "analyst")
    with Client(service.target, issued.token) as client:
        assert [d.dataset_id for d in client.datasets()] == [service.dataset_id]
        disabled = admin.disable_requester(planner.requester_id)
        assert not disabled.enabled
        with pytest.raises(AuthenticationError):
            client.datasets()


def test_disabling_an_unknown_requester_is_not_found(admin: AdminClient) -> None:
    with pytest.raises(NotFoundError) as missing:
        admin.disable_requester("nobody-00000000")
    assert missing.value.reason == "REQUESTER_NOT_FOUND"


# tokens


def test_issued_token_works_for_its_role_at_once(admin: AdminClient, service: Service) -> None:
    auditor = fresh_requester(admin)
    issued = admin.issue_token(auditor.requester_id, "auditor")
    with AuditClient(service.target, issued.token) as audit:
        assert audit.head().event_count > 0


def test_issued_token_is_refused_for_another_role(admin: AdminClient, service: Service) -> None:
    auditor = fresh_requester(admin)
    issued = admin.issue_token(auditor.requester_id, "auditor")
    with Client(service.target, issued.token) as client, pytest.raises(PermissionDeniedError):
        client.datasets()


def test_revoked_token_is_unauthenticated(admin: AdminClient, service: Service) -> None:
    planner = fresh_requester(admin)
    issued = admin.issue_token(planner.requester_id, "analyst")
    with Client(service.target, issued.token) as client:
        client.datasets()
        admin.revoke_token(issued.token_id)
        with pytest.raises(AuthenticationError):
            client.datasets()


def test_an_expiry_in_the_past_is_refused_for_tokens_and_grants(
    admin: AdminClient, service: Service
) -> None:
    planner = fresh_requester(admin)
    past = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
    with pytest.raises(DpgateError) as token_refused:
        admin.issue_token(planner.requester_id, "analyst", expires_at=past)
    with pytest.raises(DpgateError) as grant_refused:
        admin.grant(
            planner.requester_id, service.dataset_id, epsilon=1, expires_at=past,
            purpose="testing", agreement="DSA-TEST",
        )  # fmt: skip
    for refused in (token_refused.value, grant_refused.value):
        assert (refused.code, refused.reason) == ("INVALID_ARGUMENT", "BAD_TIME")
        assert "not in the future" in refused.message
    assert admin.tokens(planner.requester_id) == []
    report = admin.spending_report(service.dataset_id)
    assert planner.requester_id not in report["requester_id"].to_list()


def test_token_with_future_expiry_works(admin: AdminClient, service: Service) -> None:
    planner = fresh_requester(admin)
    future = dt.datetime.now(dt.UTC) + dt.timedelta(days=30)
    issued = admin.issue_token(planner.requester_id, "analyst", expires_at=future)
    with Client(service.target, issued.token) as client:
        assert client.datasets()


def test_unparsable_expiry_is_refused_naming_the_field(service: Service) -> None:
    error = raw_admin_call(
        service,
        "IssueToken",
        admin_pb2.IssueTokenRequest(
            requester_id="analyst-1", role=admin_pb2.ROLE_ANALYST, expires_at="next tuesday"
        ),
    )
    assert isinstance(error, InvalidRequestError)
    assert (error.reason, error.field) == ("BAD_TIME", "expires_at")


def test_expiry_without_offset_is_refused(service: Service) -> None:
    error = raw_admin_call(
        service,
        "IssueToken",
        admin_pb2.IssueTokenRequest(
            requester_id="analyst-1", role=admin_pb2.ROLE_ANALYST, expires_at="2030-01-01T00:00"
        ),
    )
    assert isinstance(error, InvalidRequestError)
    assert error.field == "expires_at"


def test_token_without_role_is_refused(service: Service) -> None:
    error = raw_admin_call(
        service, "IssueToken", admin_pb2.IssueTokenRequest(requester_id="analyst-1")
    )
    assert isinstance(error, InvalidRequestError)
    assert (error.reason, error.field) == ("BAD_ROLE", "role")


def test_provider_token_without_practices_is_refused(admin: AdminClient) -> None:
    provider = fresh_requester(admin)
    with pytest.raises(InvalidRequestError) as refused:
        admin.issue_token(provider.requester_id, "provider")
    assert refused.value.reason == "BAD_TOKEN_REQUEST"


def test_token_for_unknown_requester_is_not_found(admin: AdminClient) -> None:
    with pytest.raises(NotFoundError) as missing:
        admin.issue_token("nobody-00000000", "analyst")
    assert missing.value.reason == "REQUESTER_NOT_FOUND"


def test_revoking_an_unknown_token_is_not_found(admin: AdminClient) -> None:
    with pytest.raises(NotFoundError) as missing:
        admin.revoke_token("tok_unknown")
    assert missing.value.reason == "TOKEN_NOT_FOUND"


def test_token_secret_never_reaches_the_audit_log(admin: AdminClient, audit: AuditClient) -> None:
    planner = fresh_requester(admin)
    issued = admin.issue_token(planner.requester_id, "analyst")
    events = audit.events()
    assert any(issued.token_id in e.detail for e in events)
    assert not any(issued.token in repr(e) for e in events)
    assert issued.token not in repr(issued)


# allocations


def test_grant_creates_an_allocation(admin: AdminClient, service: Service) -> None:
    planner = fresh_requester(admin)
    budget = admin.grant(
        planner.requester_id,
        service.dataset_id,
        epsilon=1.5,
        purpose="testing",
        agreement="DSA-TEST",
    )
    assert (budget.dataset_id, budget.accounting) == (service.dataset_id, "pure_dp")
    assert (budget.allocated, budget.spent, budget.remaining) == (Decimal("1.5"), 0, Decimal("1.5"))
    assert budget.expires_at == ""


def test_grant_again_tops_the_allocation_up(admin: AdminClient, service: Service) -> None:
    planner = fresh_requester(admin)
    admin.grant(
        planner.requester_id, service.dataset_id, epsilon=1, purpose="testing", agreement="DSA-TEST"
    )
    budget = admin.grant(
        planner.requester_id,
        service.dataset_id,
        epsilon=Decimal("0.25"),
        purpose="testing",
        agreement="DSA-TEST",
    )
    assert budget.allocated == Decimal("1.25")


def test_grant_with_expiry_records_it(admin: AdminClient, service: Service) -> None:
    planner = fresh_requester(admin)
    expiry = dt.datetime(2031, 3, 31, 23, 59, tzinfo=dt.UTC)
    budget = admin.grant(
        planner.requester_id,
        service.dataset_id,
        epsilon=1,
        expires_at=expiry,
        purpose="testing",
        agreement="DSA-TEST",
    )
    assert dt.datetime.fromisoformat(budget.expires_at) == expiry


def test_top_up_with_expiry_is_one_change_and_one_event(
    admin: AdminClient, service: Service
) -> None:
    planner = fresh_requester(admin)
    admin.grant(
        planner.requester_id, service.dataset_id, epsilon=1, purpose="testing", agreement="DSA-1"
    )
    with Ledger.open_sqlite(service.ledger_path) as ledger:
        before = ledger.head().count
    expiry = dt.datetime(2032, 1, 31, tzinfo=dt.UTC)
    budget = admin.grant(planner.requester_id, service.dataset_id, epsilon=2, expires_at=expiry)
    assert (budget.allocated, dt.datetime.fromisoformat(budget.expires_at)) == (3, expiry)
    with Ledger.open_sqlite(service.ledger_path) as ledger:
        events = [e for e in ledger.list_events(after_seq=before) if e.rpc == "GrantAllocation"]
    assert len(events) == 1
    assert "top up" in events[0].detail
    assert "2032-01-31" in events[0].detail


def test_granted_budget_is_what_the_analyst_sees(admin: AdminClient, service: Service) -> None:
    planner = fresh_requester(admin)
    admin.grant(
        planner.requester_id,
        service.dataset_id,
        epsilon="0.75",
        purpose="testing",
        agreement="DSA-TEST",
    )
    issued = admin.issue_token(planner.requester_id, "analyst")
    with Client(service.target, issued.token) as client:
        [budget] = client.budget(service.dataset_id)
    assert budget.allocated == Decimal("0.75")


def test_admin_cannot_grant_to_their_own_requester(admin: AdminClient, service: Service) -> None:
    with pytest.raises(PermissionDeniedError) as refused:
        admin.grant(
            "admin-1", service.dataset_id, epsilon=1, purpose="testing", agreement="DSA-TEST"
        )
    assert refused.value.reason == "SELF_GRANT_FORBIDDEN"


def test_grant_in_the_wrong_unit_is_refused(admin: AdminClient, service: Service) -> None:
    planner = fresh_requester(admin)
    with pytest.raises(InvalidRequestError) as refused:
        admin.grant(
            planner.requester_id, service.dataset_id, rho=1, purpose="testing", agreement="DSA-TEST"
        )
    assert (refused.value.reason, refused.value.field) == ("ACCOUNTING_MISMATCH", "amount")


def test_negative_grant_is_refused(admin: AdminClient, service: Service) -> None:
    planner = fresh_requester(admin)
    with pytest.raises(InvalidRequestError) as refused:
        admin.grant(
            planner.requester_id,
            service.dataset_id,
            epsilon=-1,
            purpose="testing",
            agreement="DSA-TEST",
        )
    assert refused.value.reason == "BAD_AMOUNT"


def test_zero_top_up_with_an_expiry_changes_only_the_expiry(
    admin: AdminClient, service: Service
) -> None:
    planner = fresh_requester(admin)
    admin.grant(
        planner.requester_id, service.dataset_id, epsilon=1, purpose="testing", agreement="DSA-TEST"
    )
    later = dt.datetime(2031, 3, 31, tzinfo=dt.UTC)
    budget = admin.grant(planner.requester_id, service.dataset_id, epsilon=0, expires_at=later)
    assert (budget.allocated, budget.expires_at) == (Decimal(1), "2031-03-31T00:00:00+00:00")


def test_zero_top_up_is_refused(admin: AdminClient, service: Service) -> None:
    planner = fresh_requester(admin)
    admin.grant(
        planner.requester_id, service.dataset_id, epsilon=1, purpose="testing", agreement="DSA-TEST"
    )
    with pytest.raises(InvalidRequestError) as refused:
        admin.grant(
            planner.requester_id,
            service.dataset_id,
            epsilon=0,
            purpose="testing",
            agreement="DSA-TEST",
        )
    assert refused.value.reason == "BAD_AMOUNT"


def test_grant_without_amount_is_refused(service: Service) -> None:
    error = raw_admin_call(
        service,
        "GrantAllocation",
        admin_pb2.GrantAllocationRequest(requester_id="analyst-1", dataset_id=service.dataset_id),
    )
    assert isinstance(error, InvalidRequestError)
    assert (error.reason, error.field) == ("MISSING_FIELD", "amount")


def test_grant_on_unknown_dataset_is_not_found(admin: AdminClient) -> None:
    planner = fresh_requester(admin)
    with pytest.raises(NotFoundError) as missing:
        admin.grant(
            planner.requester_id,
            "no_such_dataset",
            epsilon=1,
            purpose="testing",
            agreement="DSA-TEST",
        )
    assert missing.value.reason == "DATASET_NOT_FOUND"


def test_grant_to_unknown_requester_is_not_found(admin: AdminClient, service: Service) -> None:
    with pytest.raises(NotFoundError) as missing:
        admin.grant(
            "nobody-00000000",
            service.dataset_id,
            epsilon=1,
            purpose="testing",
            agreement="DSA-TEST",
        )
    assert missing.value.reason == "REQUESTER_NOT_FOUND"


def test_reduce_takes_budget_back(admin: AdminClient, service: Service) -> None:
    planner = fresh_requester(admin)
    admin.grant(
        planner.requester_id, service.dataset_id, epsilon=2, purpose="testing", agreement="DSA-TEST"
    )
    budget = admin.reduce(planner.requester_id, service.dataset_id, epsilon=0.5)
    assert (budget.allocated, budget.remaining) == (Decimal("1.5"), Decimal("1.5"))


def test_reduce_below_spent_is_refused(admin: AdminClient, service: Service) -> None:
    planner = fresh_requester(admin)
    admin.grant(
        planner.requester_id, service.dataset_id, epsilon=1, purpose="testing", agreement="DSA-TEST"
    )
    with pytest.raises(DpgateError) as refused:
        admin.reduce(planner.requester_id, service.dataset_id, epsilon=2)
    assert (refused.value.code, refused.value.reason) == ("FAILED_PRECONDITION", "BELOW_SPENT")


def test_reduce_without_allocation_is_not_found(admin: AdminClient, service: Service) -> None:
    planner = fresh_requester(admin)
    with pytest.raises(NotFoundError) as missing:
        admin.reduce(planner.requester_id, service.dataset_id, epsilon=1)
    assert missing.value.reason == "ALLOCATION_NOT_FOUND"


# caps


def test_set_cap_returns_cap_and_spent(admin: AdminClient, service: Service) -> None:
    before = admin.dataset_budget(service.dataset_id)
    wanted = max(before.cap, before.allocated) + 5
    raised = admin.set_cap(service.dataset_id, epsilon=wanted, reason="new DSA")
    try:
        assert (raised.dataset_id, raised.accounting) == (service.dataset_id, "pure_dp")
        assert raised.cap == wanted
        assert 0 <= raised.spent <= raised.cap
    finally:
        admin.set_cap(service.dataset_id, epsilon=before.cap, reason="restore", force=True)


def test_a_cap_below_the_sum_of_allocations_is_refused_unless_forced(
    admin: AdminClient, service: Service, analyst_spent: Decimal
) -> None:
    before = admin.dataset_budget(service.dataset_id)
    below = before.allocated - Decimal("0.5")
    assert below > before.spent
    with pytest.raises(PreconditionFailedError) as refused:
        admin.set_cap(service.dataset_id, epsilon=below, reason="tighter")
    assert refused.value.reason == "CAP_BELOW_ALLOCATED"
    assert f"add up to epsilon {before.allocated.normalize()}" in refused.value.message
    assert admin.dataset_budget(service.dataset_id).cap == before.cap
    try:
        forced = admin.set_cap(service.dataset_id, epsilon=below, reason="tighter", force=True)
        assert forced.cap == below
    finally:
        admin.set_cap(service.dataset_id, epsilon=before.cap, reason="restore", force=True)


def test_dataset_budget_adds_up_the_allocations(admin: AdminClient, service: Service) -> None:
    budget = admin.dataset_budget(service.dataset_id)
    report = admin.spending_report(service.dataset_id)
    assert budget.allocated == sum(report["allocated"].to_list())
    assert budget.allocation_count == report.height
    assert (
        budget.spent
        == admin.set_cap(
            service.dataset_id, epsilon=budget.cap, reason="unchanged", force=True
        ).spent
    )
    assert (budget.accounting, budget.share_releases) == ("pure_dp", True)
    assert budget.version


def test_release_sharing_off_makes_each_requester_pay(admin: AdminClient, service: Service) -> None:
    question = count(service.dataset_id).by("weekday").epsilon(Decimal("0.013"))
    tokens = []
    for _ in range(3):
        planner = fresh_requester(admin)
        admin.grant(
            planner.requester_id, service.dataset_id, epsilon=1,
            purpose="testing", agreement="DSA-TEST",
        )  # fmt: skip
        tokens.append(admin.issue_token(planner.requester_id, "analyst").token)
    answers = []
    try:
        assert admin.set_release_sharing(service.dataset_id, False) is False
        for token in tokens[:2]:
            with Client(service.target, token, timeout=120) as client:
                answers.append(client.query(question))
    finally:
        assert admin.set_release_sharing(service.dataset_id, True) is True
    with Client(service.target, tokens[2], timeout=120) as client:
        shared = client.query(question)
    assert [a.repeat for a in answers] == [False, False]
    assert answers[0].release_id != answers[1].release_id
    assert all(a.charged == Decimal("0.013") for a in answers)
    assert (shared.repeat, shared.charged) == (True, 0)


def test_a_disabled_requester_can_be_enabled_again(admin: AdminClient, service: Service) -> None:
    planner = fresh_requester(admin)
    token = admin.issue_token(planner.requester_id, "analyst").token
    admin.disable_requester(planner.requester_id)
    with Client(service.target, token) as client, pytest.raises(AuthenticationError):
        client.datasets()
    enabled = admin.enable_requester(planner.requester_id)
    assert enabled.enabled
    with Client(service.target, token) as client:
        assert client.datasets()


def test_token_list_shows_records_never_secrets(admin: AdminClient) -> None:
    planner = fresh_requester(admin)
    later = dt.datetime(2031, 1, 1, tzinfo=dt.UTC)
    issued = admin.issue_token(planner.requester_id, "auditor", expires_at=later)
    admin.revoke_token(issued.token_id)
    [record] = admin.tokens(planner.requester_id)
    assert (record.token_id, record.requester_id, record.role) == (
        issued.token_id, planner.requester_id, "auditor",
    )  # fmt: skip
    assert record.expires_at == later
    assert record.revoked_at is not None
    assert record.created_at <= record.revoked_at
    assert issued.token not in repr(admin.tokens())
    assert issued.token_id in {t.token_id for t in admin.tokens()}


def test_spending_report_shows_remaining_expiry_and_last_spend(
    admin: AdminClient, service: Service
) -> None:
    planner = fresh_requester(admin)
    later = dt.datetime(2031, 1, 1, tzinfo=dt.UTC)
    admin.grant(
        planner.requester_id, service.dataset_id, epsilon=1, expires_at=later,
        purpose="testing", agreement="DSA-TEST",
    )  # fmt: skip
    token = admin.issue_token(planner.requester_id, "analyst").token
    started = dt.datetime.now(dt.UTC)
    with Client(service.target, token, timeout=120) as client:
        client.query(count(service.dataset_id).by("sex").epsilon(Decimal("0.25")))
    report = admin.spending_report(service.dataset_id)
    [row] = report.filter(pl.col("requester_id") == planner.requester_id).iter_rows(named=True)
    assert row["remaining"] == Decimal("0.75")
    assert row["expires_at"] == later
    assert started <= row["last_spend_at"] <= dt.datetime.now(dt.UTC)


def test_cap_below_spent_is_refused(
    admin: AdminClient, service: Service, analyst_spent: Decimal
) -> None:
    with pytest.raises(DpgateError) as refused:
        admin.set_cap(service.dataset_id, epsilon=analyst_spent / 2, reason="tighten")
    assert (refused.value.code, refused.value.reason) == ("FAILED_PRECONDITION", "BELOW_SPENT")


def test_cap_in_the_wrong_unit_is_refused(admin: AdminClient, service: Service) -> None:
    with pytest.raises(InvalidRequestError) as refused:
        admin.set_cap(service.dataset_id, rho=20, reason="typo")
    assert (refused.value.reason, refused.value.field) == ("ACCOUNTING_MISMATCH", "cap")


def test_cap_without_reason_is_refused(admin: AdminClient, service: Service) -> None:
    with pytest.raises(InvalidRequestError) as refused:
        admin.set_cap(service.dataset_id, epsilon=DATASET_CAP_EPSILON, reason="")
    assert refused.value.reason == "REASON_REQUIRED"


def test_cap_on_unknown_dataset_is_not_found(admin: AdminClient) -> None:
    with pytest.raises(NotFoundError) as missing:
        admin.set_cap("no_such_dataset", epsilon=1, reason="why not")
    assert missing.value.reason == "DATASET_NOT_FOUND"


def test_cap_without_amount_is_refused(service: Service) -> None:
    error = raw_admin_call(
        service,
        "SetDatasetCap",
        admin_pb2.SetDatasetCapRequest(dataset_id=service.dataset_id, reason="r"),
    )
    assert isinstance(error, InvalidRequestError)
    assert (error.reason, error.field) == ("MISSING_FIELD", "cap")


def test_unspecified_accounting_is_refused(service: Service) -> None:
    error = raw_admin_call(
        service,
        "SetDatasetCap",
        admin_pb2.SetDatasetCapRequest(
            dataset_id=service.dataset_id, cap=types_pb2.Spend(nano_units=1), reason="r"
        ),
    )
    assert isinstance(error, InvalidRequestError)
    assert error.reason == "ACCOUNTING_MISMATCH"


# reports


def test_spending_report_shows_allocations_exactly(
    admin: AdminClient, service: Service, analyst_spent: Decimal
) -> None:
    report = admin.spending_report()
    assert report.schema["allocated"] == pl.Decimal(38, 9)
    [row] = report.filter(pl.col("requester_id") == "analyst-1").to_dicts()
    assert row["dataset_id"] == service.dataset_id
    assert row["organisation"] == "Test Trust"
    assert row["accounting"] == "pure_dp"
    assert row["allocated"] == ANALYST_EPSILON
    assert row["spent"] == analyst_spent
    assert row["release_count"] >= 1


def test_spending_report_of_one_dataset(admin: AdminClient, service: Service) -> None:
    report = admin.spending_report(service.dataset_id)
    assert set(report["dataset_id"]) == {service.dataset_id}


def test_spending_report_of_unknown_dataset_is_not_found(admin: AdminClient) -> None:
    with pytest.raises(NotFoundError) as missing:
        admin.spending_report("no_such_dataset")
    assert missing.value.reason == "DATASET_NOT_FOUND"


def test_publishing_an_unknown_dataset_is_not_found(admin: AdminClient) -> None:
    # Publishing itself is tested in tests/integration/governance (on its own store).
    with pytest.raises(NotFoundError) as missing:
        admin.publish_dataset_version("no_such_dataset")
    assert missing.value.reason == "DATASET_NOT_FOUND"


# the audit trail of administration


def test_a_change_is_audited_once_with_the_canonical_request(
    admin: AdminClient, audit: AuditClient, service: Service
) -> None:
    planner = fresh_requester(admin)
    admin.grant(
        planner.requester_id, service.dataset_id, epsilon=1, purpose="testing", agreement="DSA-TEST"
    )
    grants = [e for e in audit.events() if planner.requester_id in e.query_text]
    grants = [e for e in grants if e.rpc == "GrantAllocation"]
    assert len(grants) == 1
    [event] = grants
    assert (event.outcome, event.requester_id, event.role) == ("answered", "admin-1", "admin")
    assert '"nano_units":"1000000000"' in event.query_text
    assert event.detail.startswith(f"grant epsilon 1 on {service.dataset_id}")


def test_a_refused_change_is_audited(
    admin: AdminClient, audit: AuditClient, service: Service
) -> None:
    before = audit.head().event_count  # the GetAuditHead call itself is event before + 1
    with pytest.raises(PermissionDeniedError):
        admin.grant(
            "admin-1", service.dataset_id, epsilon=1, purpose="testing", agreement="DSA-TEST"
        )
    refused = [e for e in audit.events(from_sequence=before + 1) if e.rpc == "GrantAllocation"]
    assert [(e.outcome, e.detail) for e in refused] == [("denied", "SELF_GRANT_FORBIDDEN")]


def test_new_grant_without_purpose_is_refused_and_a_purpose_is_reported(
    service: Service, admin: AdminClient
) -> None:
    planner = fresh_requester(admin)
    with pytest.raises(InvalidRequestError) as refused:
        admin.grant(planner.requester_id, service.dataset_id, epsilon=1)
    assert refused.value.reason == "REASON_REQUIRED"
    assert "purpose" in str(refused.value)
    admin.grant(
        planner.requester_id,
        service.dataset_id,
        epsilon=1,
        purpose="winter planning",
        agreement="DSA-2025-7",
    )
    report = admin.spending_report(service.dataset_id)
    row = report.filter(pl.col("requester_id") == planner.requester_id).row(0, named=True)
    assert (row["purpose"], row["agreement"]) == ("winter planning", "DSA-2025-7")

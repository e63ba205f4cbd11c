"""The audit chain over the wire: the real AuditClient, server and ledger."""

from __future__ import annotations

import csv
import io
import itertools
import json
from collections.abc import Iterator

import grpc
import pytest

from dpgate._admin_types import AuditEvent, AuditHead
from dpgate._audit import AuditClient
from dpgate._client import Client
from dpgate._query import count
from dpgate._types import QueryResult
from dpgate.errors import InvalidRequestError, PermissionDeniedError, from_rpc_error
from dpgate_proto.v1 import audit_pb2, audit_pb2_grpc
from dpgate_server.ledger import model
from dpgate_server.ledger.chain import event_hash
from dpgate_server.ledger.ledger import Ledger
from dpgate_server.ledger.transparency import CSV_COLUMNS

from .conftest import SETUP, Service

QUERY_FIELDS = {
    "seq",
    "time",
    "organisation",
    "dataset_id",
    "measure",
    "query",
    "spend",
    "spend_units",
    "cumulative_spend_units",
    "event_hash",
    "purpose",
    "agreement",
}


@pytest.fixture(scope="module")
def audit(service: Service) -> Iterator[AuditClient]:
    with AuditClient(service.target, service.tokens["auditor"]) as connected:
        yield connected


@pytest.fixture(scope="module")
def answered(service: Service) -> QueryResult:
    """One real DP answer (48 cells), unique to this module, so the report holds its release."""
    with Client(service.target, service.tokens["analyst"], timeout=120) as client:
        return client.query(count(service.dataset_id).by("hour", "sex").epsilon(0.375))


@pytest.fixture(scope="module")
def long_chain(service: Service) -> int:
    """More events than one streamed message holds; returns the chain's length."""
    with Ledger.open_sqlite(service.ledger_path) as ledger:
        for _ in range(520):
            ledger.record_event(SETUP, model.Outcome.ANSWERED, detail="filler")
        return ledger.head().count


def ledger_event(event: AuditEvent) -> model.AuditEvent:
    """The event as the ledger stores it (the wire's empty strings are its Nones)."""
    return model.AuditEvent(
        seq=event.sequence,
        at=event.occurred_at,
        requester_id=event.requester_id or None,
        token_id=event.token_id or None,
        role=event.role or None,
        rpc=event.rpc,
        query_text=event.query_text,
        dataset_id=event.dataset_id or None,
        cost_units=int(event.cost * 10**9),
        outcome=model.Outcome(event.outcome),
        release_id=event.release_id or None,
        request_id=event.request_id,
        detail=event.detail,
        prev_hash=event.previous_hash,
        event_hash=event.event_hash,
    )


def keys_of(document: object) -> set[str]:
    """Every key anywhere in a JSON document."""
    if isinstance(document, dict):
        return set(document).union(*(keys_of(v) for v in document.values()))
    if isinstance(document, list):
        return set().union(*(keys_of(v) for v in document))
    return set()


def raw_export(
    service: Service, export_format: audit_pb2.ExportFormat.ValueType
) -> grpc.RpcError | None:
    with grpc.insecure_channel(service.target) as channel:
        stub = audit_pb2_grpc.AuditServiceStub(channel)
        metadata = (("authorization", f"Bearer {service.tokens['auditor']}"),)
        request = audit_pb2.ExportTransparencyReportRequest(format=export_format)
        try:
            list(stub.ExportTransparencyReport(request, metadata=metadata, timeout=30))
        except grpc.RpcError as error:
            return error
    return None


def test_events_are_numbered_from_one_and_linked(audit: AuditClient, answered: QueryResult) -> None:
    events = audit.events()
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    assert events[0].previous_hash == "0" * 64
    for before, after in itertools.pairwise(events):
        assert after.previous_hash == before.event_hash


def test_every_hashed_field_reaches_the_auditor(audit: AuditClient, answered: QueryResult) -> None:
    events = audit.events()
    assert all(event_hash(ledger_event(e)) == e.event_hash for e in events)


def test_a_charged_query_is_an_event_with_its_cost(
    audit: AuditClient, answered: QueryResult, service: Service
) -> None:
    [event] = [e for e in audit.events() if e.release_id == answered.release_id]
    assert (event.rpc, event.outcome, event.detail) == ("RunQuery", "answered", "charged")
    assert (event.requester_id, event.role) == ("analyst-1", "analyst")
    assert (event.dataset_id, event.accounting) == (service.dataset_id, "pure_dp")
    assert event.cost == answered.charged


def test_events_from_a_sequence_with_a_limit(audit: AuditClient, answered: QueryResult) -> None:
    assert [e.sequence for e in audit.events(from_sequence=3, limit=2)] == [3, 4]


def test_long_chains_stream_in_chunks_and_arrive_whole(service: Service, long_chain: int) -> None:
    with grpc.insecure_channel(service.target) as channel:
        stub = audit_pb2_grpc.AuditServiceStub(channel)
        metadata = (("authorization", f"Bearer {service.tokens['auditor']}"),)
        chunks = list(
            stub.ListAuditEvents(audit_pb2.ListAuditEventsRequest(), metadata=metadata, timeout=30)
        )
    assert len(chunks) >= 2
    assert all(len(chunk.events) <= 500 for chunk in chunks)
    sequences = [e.sequence for chunk in chunks for e in chunk.events]
    assert sequences == list(range(1, len(sequences) + 1))
    assert len(sequences) >= long_chain


def test_clean_chain_verifies(audit: AuditClient, answered: QueryResult) -> None:
    verification = audit.verify()
    assert verification.valid
    assert (verification.first_bad_sequence, verification.problem) == (None, "")
    assert verification.head.event_count > 0


def test_chain_verifies_against_a_head_kept_earlier(
    audit: AuditClient, answered: QueryResult
) -> None:
    kept = audit.head()
    audit.events(limit=1)  # the chain grows meanwhile
    assert audit.verify(expected_head=kept).valid


def test_a_head_the_chain_never_had_is_detected(audit: AuditClient) -> None:
    kept = audit.head()
    forged = AuditHead(event_count=kept.event_count, head_hash="f" * 64)
    verification = audit.verify(expected_head=forged)
    assert not verification.valid
    assert verification.first_bad_sequence == kept.event_count
    assert verification.problem


def test_head_is_the_last_event(audit: AuditClient) -> None:
    head = audit.head()
    [last] = audit.events(from_sequence=head.event_count, limit=1)
    assert last.event_hash == head.head_hash


def test_reading_the_log_is_itself_audited(audit: AuditClient) -> None:
    head = audit.head()
    [read] = audit.events(from_sequence=head.event_count + 1, limit=1)
    assert (read.rpc, read.requester_id, read.role) == ("GetAuditHead", "auditor-1", "auditor")


def test_json_report_lists_answered_queries_and_no_value(
    audit: AuditClient, answered: QueryResult, service: Service
) -> None:
    report = json.loads(audit.transparency_report("json"))
    [entry] = [q for q in report["queries"] if q["query"] == answered.canonical_query]
    assert set(entry) == QUERY_FIELDS
    assert entry["dataset_id"] == service.dataset_id
    assert entry["organisation"] == "Test Trust"
    assert (entry["purpose"], entry["agreement"]) == ("testing", "DSA-TEST")
    assert entry["spend"] == str(answered.charged)
    assert not keys_of(report) & {"value", "values", "cells", "ci_low", "ci_high", "payload"}
    assert answered.release_id not in json.dumps(report)
    assert report["head"]["count"] > 0


def test_csv_report_has_the_documented_columns(audit: AuditClient, answered: QueryResult) -> None:
    rows = list(csv.DictReader(io.StringIO(audit.transparency_report("csv").decode())))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert rows[0]["record"] == "head"
    queries = [r for r in rows if r["record"] == "query"]
    assert [r["query"] for r in queries].count(answered.canonical_query) == 1


def test_report_in_an_unknown_format_is_refused_by_the_client(audit: AuditClient) -> None:
    with pytest.raises(ValueError, match="xml"):
        audit.transparency_report("xml")


def test_report_with_unspecified_format_is_refused(service: Service) -> None:
    error = raw_export(service, audit_pb2.EXPORT_FORMAT_UNSPECIFIED)
    assert error is not None
    refused = from_rpc_error(error)
    assert isinstance(refused, InvalidRequestError)
    assert (refused.reason, refused.field) == ("BAD_FORMAT", "format")


def test_admin_token_cannot_read_the_log(service: Service) -> None:
    with (
        AuditClient(service.target, service.tokens["admin"]) as wrong,
        pytest.raises(PermissionDeniedError),
    ):
        wrong.head()

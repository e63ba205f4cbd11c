"""Bad input found by the adversarial suite is refused as bad input, never as INTERNAL."""

from __future__ import annotations

import time
from collections.abc import Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from dpgate.errors import from_rpc_error
from dpgate_proto.v1 import provider_pb2, provider_pb2_grpc, query_pb2, query_pb2_grpc
from dpgate_server.ledger.ledger import Ledger
from dpgate_server.ledger.model import AuditEvent, Outcome
from dpgate_server.store.store import DatasetVersion

from .conftest import Service

NOT_A_MESSAGE = b"\xff\xff\xff\x0f\x01"
INVALID_UTF8_STRING = b"\x0a\x02\xc3\x28"  # field 1 (a string) holding invalid UTF-8


@pytest.fixture(scope="module")
def channel(service: Service) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(service.target) as chan:
        yield chan


def bearer(service: Service) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {service.tokens['analyst']}"),)


@pytest.mark.parametrize("payload", [NOT_A_MESSAGE, INVALID_UTF8_STRING])
def test_unparsable_request_bytes_are_invalid_argument_and_audited(
    channel: grpc.Channel, service: Service, payload: bytes
) -> None:
    raw = channel.unary_unary("/dpgate.v1.QueryService/DescribeDataset")
    with pytest.raises(grpc.RpcError) as caught:
        raw(payload, metadata=bearer(service), timeout=30)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with Ledger.open_sqlite(service.ledger_path) as ledger:
        last = ledger.list_events(after_seq=ledger.head().count - 1)[-1]
    assert (last.rpc, last.outcome, last.detail) == (
        "DescribeDataset",
        Outcome.INVALID,
        "MALFORMED_REQUEST",
    )


def test_unparsable_bytes_on_a_streaming_rpc_are_invalid_argument(
    channel: grpc.Channel, service: Service
) -> None:
    raw = channel.unary_stream("/dpgate.v1.QueryService/RunQuery")
    with pytest.raises(grpc.RpcError) as caught:
        list(raw(NOT_A_MESSAGE, metadata=bearer(service), timeout=30))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_unparsable_bytes_without_a_token_are_unauthenticated(channel: grpc.Channel) -> None:
    raw = channel.unary_unary("/dpgate.v1.QueryService/GetBudget")
    with pytest.raises(grpc.RpcError) as caught:
        raw(NOT_A_MESSAGE, timeout=30)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_unparsable_bytes_to_health_are_invalid_argument_and_health_answers(
    channel: grpc.Channel,
) -> None:
    raw = channel.unary_unary("/grpc.health.v1.Health/Check")
    with pytest.raises(grpc.RpcError) as caught:
        raw(NOT_A_MESSAGE, timeout=30)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=30)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        (query_pb2.Query(aggregate=query_pb2.Aggregate(function=99), epsilon=0.1), "BAD_AGGREGATE"),
        (
            query_pb2.Query(
                aggregate=query_pb2.Aggregate(function=query_pb2.AGGREGATE_FUNCTION_COUNT),
                filters=[query_pb2.Filter(column="mode", operator=-7)],
                epsilon=0.1,
            ),
            "BAD_OPERATOR",
        ),
    ],
)
def test_unknown_enum_numbers_are_invalid_argument(
    channel: grpc.Channel, service: Service, query: query_pb2.Query, reason: str
) -> None:
    query.dataset_id = service.dataset_id
    stub = query_pb2_grpc.QueryServiceStub(channel)
    with pytest.raises(grpc.RpcError) as caught:
        stub.PreviewQuery(
            query_pb2.PreviewQueryRequest(query=query), metadata=bearer(service), timeout=30
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert from_rpc_error(caught.value).reason == reason
    number = query.filters[0].operator if query.filters else query.aggregate.function
    assert f"unknown value {number}" in (caught.value.details() or "")


@pytest.mark.parametrize("page_token", ["²", "٣", "1e3", "-1", " 1"])
def test_a_page_token_of_unicode_digits_is_invalid_argument(
    channel: grpc.Channel, service: Service, page_token: str
) -> None:
    stub = query_pb2_grpc.QueryServiceStub(channel)
    with pytest.raises(grpc.RpcError) as caught:
        stub.ListReleases(
            query_pb2.ListReleasesRequest(page_token=page_token),
            metadata=bearer(service),
            timeout=30,
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize("echoed", ["a" * 20_000, "\u00e9" * 10_000, "\U0001f916" * 5_000])
def test_an_error_quoting_enormous_input_is_bounded_and_keeps_its_status(
    channel: grpc.Channel, service: Service, echoed: str
) -> None:
    stub = query_pb2_grpc.QueryServiceStub(channel)
    with pytest.raises(grpc.RpcError) as caught:
        stub.DescribeDataset(
            query_pb2.DescribeDatasetRequest(dataset_id=echoed),
            metadata=bearer(service),
            timeout=30,
        )
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND  # not "Stream removed"
    details = caught.value.details() or ""
    assert details.endswith("...")
    assert len(details.encode("utf-8")) <= 1024
    error = from_rpc_error(caught.value)
    assert error.reason == "DATASET_NOT_FOUND"
    assert all(len(v.encode("utf-8")) <= 128 for v in error.metadata.values())


def test_unparsable_bytes_in_a_request_stream_are_invalid_argument(
    channel: grpc.Channel, service: Service
) -> None:
    raw = channel.stream_unary("/dpgate.v1.ProviderService/UploadExtract")
    provider = (("authorization", f"Bearer {service.tokens['provider']}"),)
    with pytest.raises(grpc.RpcError) as caught:
        raw(iter([NOT_A_MESSAGE]), metadata=provider, timeout=30)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert from_rpc_error(caught.value).reason == "MALFORMED_REQUEST"


@pytest.mark.parametrize("oversized", ["chunk", "header"])
def test_an_oversized_message_in_an_upload_stream_is_audited_as_invalid(
    service: Service, small_dataset: DatasetVersion, oversized: str
) -> None:
    """A 5 MB chunk (or header field) is an incomplete request, not a server failure.

    gRPC ends the call; the servicer's request iterator then usually raises, but may
    first end as if the client had finished: the upload is then refused as incomplete
    (no header, or fewer bytes than declared). Either way: invalid, never FAILED/INTERNAL.
    """
    big = 5 * 1024 * 1024
    practice = str((small_dataset.metadata.column("practice_code").values or ("",))[0])
    header = provider_pb2.UploadHeader(
        dataset_id=service.dataset_id, practice_code=practice, size_bytes=big
    )
    if oversized == "header":
        header.dataset_id = "x" * big
    messages = [provider_pb2.UploadExtractRequest(header=header)]
    if oversized == "chunk":
        messages.append(provider_pb2.UploadExtractRequest(chunk=b"\0" * big))
    token = (("authorization", f"Bearer {service.tokens['provider']}"),)
    with Ledger.open_sqlite(service.ledger_path) as ledger:
        before = ledger.head().count
    with grpc.insecure_channel(
        service.target, options=[("grpc.max_send_message_length", 2 * big)]
    ) as channel:
        upload = provider_pb2_grpc.ProviderServiceStub(channel).UploadExtract
        with pytest.raises(grpc.RpcError) as caught:
            upload(iter(messages), metadata=token, timeout=30)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    event = _wait_for_event(service, before, "UploadExtract")
    assert event.outcome is Outcome.INVALID
    assert event.detail in {"REQUEST_STREAM_ENDED", "MISSING_HEADER", "EXTRACT_TRUNCATED"}


def _wait_for_event(service: Service, after_seq: int, rpc: str) -> AuditEvent:
    """The first event of `rpc` after `after_seq`: gRPC answers the client before the
    servicer has seen the stream end, so the event may be written a moment later."""
    deadline = time.monotonic() + 30
    with Ledger.open_sqlite(service.ledger_path) as ledger:
        while time.monotonic() < deadline:
            found = [e for e in ledger.list_events(after_seq=after_seq) if e.rpc == rpc]
            if found:
                return found[0]
            time.sleep(0.05)
    raise AssertionError(f"no {rpc} event was recorded")

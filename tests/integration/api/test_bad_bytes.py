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


MAX_MESSAGE_BYTES = 4 * 1024 * 1024
"""The shared server's `server.max_message_bytes` (the default)."""


def _upload_messages(
    service: Service, small_dataset: DatasetVersion, oversized: str, size: int
) -> list[provider_pb2.UploadExtractRequest]:
    """An upload whose header (a field of `size` bytes) or one chunk is `size` bytes."""
    practice = str((small_dataset.metadata.column("practice_code").values or ("",))[0])
    header = provider_pb2.UploadHeader(
        dataset_id=service.dataset_id, practice_code=practice, size_bytes=size
    )
    if oversized == "header":
        header.dataset_id = "x" * size
    messages = [provider_pb2.UploadExtractRequest(header=header)]
    if oversized == "chunk":
        messages.append(provider_pb2.UploadExtractRequest(chunk=b"\0" * size))
    return messages


def _send_upload(
    service: Service, messages: list[provider_pb2.UploadExtractRequest], size: int
) -> grpc.RpcError:
    token = (("authorization", f"Bearer {service.tokens['provider']}"),)
    with grpc.insecure_channel(
        service.target, options=[("grpc.max_send_message_length", 2 * size)]
    ) as channel:
        upload = provider_pb2_grpc.ProviderServiceStub(channel).UploadExtract
        with pytest.raises(grpc.RpcError) as caught:
            upload(iter(messages), metadata=token, timeout=30)
    return caught.value


def _head(service: Service) -> int:
    with Ledger.open_sqlite(service.ledger_path) as ledger:
        return ledger.head().count


def _assert_serving(service: Service) -> None:
    with grpc.insecure_channel(service.target) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=30
        )
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


def _assert_says_what_to_change(error: grpc.RpcError, size: int) -> None:
    """The server's own answer (its ErrorInfo, not the client's guess from the code)."""
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    converted = from_rpc_error(error)
    assert converted.reason == "MESSAGE_TOO_LARGE"
    assert converted.metadata["max_message_bytes"] == str(MAX_MESSAGE_BYTES)
    assert int(converted.metadata["size_bytes"]) >= size  # the whole message as sent
    details = error.details() or ""
    assert f"larger than the {MAX_MESSAGE_BYTES:,} bytes this server accepts" in details
    assert "server.max_message_bytes" in details
    assert "an upload sends its file in chunks" in details


@pytest.mark.parametrize("oversized", ["chunk", "header"])
def test_an_oversized_message_in_an_upload_stream_is_refused_as_too_large(
    service: Service, small_dataset: DatasetVersion, oversized: str
) -> None:
    """A 5 MB chunk (or header field) is refused as MESSAGE_TOO_LARGE, audited as refused.

    The server answers it itself (gRPC's own cut-off, which the servicer cannot tell from
    a cancelled stream, only comes at twice the limit), so the caller is told what to change.
    """
    size = 5 * 1000 * 1000
    assert size > MAX_MESSAGE_BYTES
    before = _head(service)
    error = _send_upload(service, _upload_messages(service, small_dataset, oversized, size), size)
    _assert_says_what_to_change(error, size)
    event = _wait_for_event(service, before, "UploadExtract")
    assert (event.outcome, event.detail) == (Outcome.REFUSED, "MESSAGE_TOO_LARGE")
    _assert_serving(service)


@pytest.mark.parametrize("oversized", ["chunk", "header"])
def test_a_message_past_grpcs_own_cut_off_in_an_upload_stream_is_audited_as_invalid(
    service: Service, small_dataset: DatasetVersion, oversized: str
) -> None:
    """Past twice the limit gRPC ends the call itself: an incomplete request, not a failure.

    The servicer's request iterator then usually raises, but may first end as if the
    client had finished: the upload is then refused as incomplete (no header, or fewer
    bytes than declared). Either way: invalid, never FAILED/INTERNAL.
    """
    size = 2 * MAX_MESSAGE_BYTES + 1024
    before = _head(service)
    error = _send_upload(service, _upload_messages(service, small_dataset, oversized, size), size)
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    event = _wait_for_event(service, before, "UploadExtract")
    assert event.outcome is Outcome.INVALID
    assert event.detail in {"REQUEST_STREAM_ENDED", "MISSING_HEADER", "EXTRACT_TRUNCATED"}
    _assert_serving(service)


def test_an_oversized_query_is_refused_as_too_large_audited_and_charges_nothing(
    channel: grpc.Channel, service: Service
) -> None:
    query = query_pb2.Query(dataset_id=service.dataset_id, group_by=["x" * 1000] * 5000)
    size = query_pb2.RunQueryRequest(query=query).ByteSize()
    assert MAX_MESSAGE_BYTES < size < 2 * MAX_MESSAGE_BYTES
    with Ledger.open_sqlite(service.ledger_path) as ledger:
        spent = ledger.get_budget(service.analyst_id, service.dataset_id).spent_units
        before = ledger.head().count
    with grpc.insecure_channel(
        service.target, options=[("grpc.max_send_message_length", 2 * size)]
    ) as big_channel:
        run = query_pb2_grpc.QueryServiceStub(big_channel).RunQuery
        with pytest.raises(grpc.RpcError) as caught:
            list(run(query_pb2.RunQueryRequest(query=query), metadata=bearer(service), timeout=30))
    _assert_says_what_to_change(caught.value, size)
    event = _wait_for_event(service, before, "RunQuery")
    assert (event.outcome, event.detail) == (Outcome.REFUSED, "MESSAGE_TOO_LARGE")
    with Ledger.open_sqlite(service.ledger_path) as ledger:
        assert ledger.get_budget(service.analyst_id, service.dataset_id).spent_units == spent
    _assert_serving(service)


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

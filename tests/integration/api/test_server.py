"""The real server on port 0, called through the real generated stubs."""

from __future__ import annotations

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status

from dpgate_proto.v1 import (
    provider_pb2,
    provider_pb2_grpc,
    query_pb2,
    query_pb2_grpc,
    types_pb2,
)
from dpgate_server.store.store import DatasetVersion

from .conftest import Service


def error_reason(error: grpc.RpcError) -> str:
    status = rpc_status.from_call(error)
    assert status is not None, "error carries no rich status"
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    return info.reason


Metadata = tuple[tuple[str, str], ...]


@pytest.fixture
def analyst(service: Service) -> Metadata:
    return (("authorization", f"Bearer {service.tokens['analyst']}"),)


def test_health_reports_serving(channel: grpc.Channel, analyst: Metadata) -> None:
    stub = health_pb2_grpc.HealthStub(channel)
    for service in ("", "dpgate.v1.QueryService", "dpgate.v1.AdminService"):
        reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_reflection_lists_every_service(channel: grpc.Channel, analyst: Metadata) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    reply = next(iter(stub.ServerReflectionInfo(iter([request]), timeout=5)))
    names = {s.name for s in reply.list_services_response.service}
    assert {
        "dpgate.v1.QueryService",
        "dpgate.v1.AdminService",
        "dpgate.v1.AuditService",
        "dpgate.v1.ProviderService",
        "grpc.health.v1.Health",
    } <= names


def test_reflection_serves_the_contract_file(channel: grpc.Channel, analyst: Metadata) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    request = reflection_pb2.ServerReflectionRequest(file_containing_symbol="dpgate.v1.Query")
    reply = next(iter(stub.ServerReflectionInfo(iter([request]), timeout=5)))
    assert reply.file_descriptor_response.file_descriptor_proto


def test_list_datasets_names_the_synthetic_dataset(
    channel: grpc.Channel, small_dataset: DatasetVersion, analyst: Metadata
) -> None:
    reply = query_pb2_grpc.QueryServiceStub(channel).ListDatasets(
        query_pb2.ListDatasetsRequest(), timeout=10, metadata=analyst
    )
    assert [d.dataset_id for d in reply.datasets] == [small_dataset.dataset_id]
    summary = reply.datasets[0]
    assert summary.version == small_dataset.version
    assert summary.max_contributions == small_dataset.metadata.max_contributions
    assert summary.accounting == types_pb2.ACCOUNTING_PURE_DP


def test_describe_dataset_returns_public_metadata(
    channel: grpc.Channel, small_dataset: DatasetVersion, analyst: Metadata
) -> None:
    reply = query_pb2_grpc.QueryServiceStub(channel).DescribeDataset(
        query_pb2.DescribeDatasetRequest(dataset_id=small_dataset.dataset_id),
        timeout=10,
        metadata=analyst,
    )
    columns = {c.name: c for c in reply.columns}
    assert set(columns) == {c.name for c in small_dataset.metadata.columns}
    practices = [v.string_value for v in columns["practice_code"].values]
    assert practices == list(small_dataset.metadata.column("practice_code").values or ())
    assert columns["practice_code"].groupable
    assert (columns["duration_minutes"].bounds.low, columns["duration_minutes"].bounds.high) == (
        0,
        60,
    )
    assert {t.name for t in reply.public_tables} >= {"practices", "calendar"}


def test_describe_dataset_never_lists_private_values(
    channel: grpc.Channel, small_dataset: DatasetVersion, analyst: Metadata
) -> None:
    reply = query_pb2_grpc.QueryServiceStub(channel).DescribeDataset(
        query_pb2.DescribeDatasetRequest(dataset_id=small_dataset.dataset_id),
        timeout=10,
        metadata=analyst,
    )
    patient = next(c for c in reply.columns if c.name == "patient_key")
    assert patient.visibility == types_pb2.VISIBILITY_PRIVATE
    assert not patient.values
    assert not patient.groupable
    assert not patient.filterable


def test_describe_unknown_dataset_is_not_found_with_reason(
    channel: grpc.Channel, analyst: Metadata
) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        query_pb2_grpc.QueryServiceStub(channel).DescribeDataset(
            query_pb2.DescribeDatasetRequest(dataset_id="no_such_dataset"),
            timeout=10,
            metadata=analyst,
        )
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert "ListDatasets" in (caught.value.details() or "")
    assert error_reason(caught.value) == "DATASET_NOT_FOUND"


def test_describe_without_dataset_id_is_invalid_argument(
    channel: grpc.Channel, analyst: Metadata
) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        query_pb2_grpc.QueryServiceStub(channel).DescribeDataset(
            query_pb2.DescribeDatasetRequest(), timeout=10, metadata=analyst
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "dataset_id is required" in (caught.value.details() or "")


def test_path_like_dataset_id_is_not_found(channel: grpc.Channel, analyst: Metadata) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        query_pb2_grpc.QueryServiceStub(channel).DescribeDataset(
            query_pb2.DescribeDatasetRequest(dataset_id="../../etc"), timeout=10, metadata=analyst
        )
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


def test_public_table_streams_every_practice(
    channel: grpc.Channel, small_dataset: DatasetVersion, analyst: Metadata
) -> None:
    chunks = list(
        query_pb2_grpc.QueryServiceStub(channel).StreamPublicTable(
            query_pb2.StreamPublicTableRequest(
                dataset_id=small_dataset.dataset_id, table="practices"
            ),
            timeout=10,
            metadata=analyst,
        )
    )
    columns = list(chunks[0].columns)
    rows = [row for chunk in chunks for row in chunk.rows]
    codes = {row.values[columns.index("practice_code")].string_value for row in rows}
    assert codes == set(small_dataset.metadata.column("practice_code").values or ())
    assert "list_size" in columns


def test_private_table_is_not_a_public_table(
    channel: grpc.Channel, small_dataset: DatasetVersion, analyst: Metadata
) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        list(
            query_pb2_grpc.QueryServiceStub(channel).StreamPublicTable(
                query_pb2.StreamPublicTableRequest(
                    dataset_id=small_dataset.dataset_id, table="appointments"
                ),
                timeout=10,
                metadata=analyst,
            )
        )
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert error_reason(caught.value) == "TABLE_NOT_FOUND"


def test_provider_rpcs_name_a_missing_field(service: Service, channel: grpc.Channel) -> None:
    provider = (("authorization", f"Bearer {service.tokens['provider']}"),)
    with pytest.raises(grpc.RpcError) as caught:
        provider_pb2_grpc.ProviderServiceStub(channel).GetPracticeStatus(
            provider_pb2.GetPracticeStatusRequest(), timeout=10, metadata=provider
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "dataset_id is required" in (caught.value.details() or "")
    assert error_reason(caught.value) == "MISSING_FIELD"

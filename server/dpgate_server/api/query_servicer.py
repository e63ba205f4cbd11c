"""QueryService: what analysts call. Thin: convert, call the domain, convert back."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
from dpgate._proto.dpgate.v1 import query_pb2, query_pb2_grpc

from dpgate_server.api.convert import (
    dataset_summary_to_proto,
    describe_to_proto,
    public_rows_to_proto,
)
from dpgate_server.api.errors import BadRequestError, NotYetAvailableError, translate_errors
from dpgate_server.data.catalog import Catalog


class QueryServicer(query_pb2_grpc.QueryServiceServicer):
    """Public metadata is served here; DP answers arrive with the engine and ledger."""

    def __init__(self, catalog: Catalog) -> None:
        self._catalog = catalog

    @translate_errors
    def ListDatasets(
        self, request: query_pb2.ListDatasetsRequest, context: grpc.ServicerContext
    ) -> query_pb2.ListDatasetsResponse:
        versions = self._catalog.current_versions()
        return query_pb2.ListDatasetsResponse(
            datasets=[dataset_summary_to_proto(v) for v in versions]
        )

    @translate_errors
    def DescribeDataset(
        self, request: query_pb2.DescribeDatasetRequest, context: grpc.ServicerContext
    ) -> query_pb2.DescribeDatasetResponse:
        _require(request.dataset_id, "dataset_id")
        version = self._catalog.current(request.dataset_id)
        return describe_to_proto(version, self._catalog.public_tables(version))

    @translate_errors
    def StreamPublicTable(
        self, request: query_pb2.StreamPublicTableRequest, context: grpc.ServicerContext
    ) -> Iterator[query_pb2.StreamPublicTableResponse]:
        _require(request.dataset_id, "dataset_id")
        _require(request.table, "table")
        first = True
        for chunk in self._catalog.read_public_table(request.dataset_id, request.table):
            yield query_pb2.StreamPublicTableResponse(
                columns=list(chunk.columns) if first else [],
                rows=public_rows_to_proto(chunk.rows),
            )
            first = False

    @translate_errors
    def PreviewQuery(
        self, request: query_pb2.PreviewQueryRequest, context: grpc.ServicerContext
    ) -> query_pb2.PreviewQueryResponse:
        raise NotYetAvailableError("PreviewQuery", "the DP query engine (issue 5)")

    @translate_errors
    def RunQuery(
        self, request: query_pb2.RunQueryRequest, context: grpc.ServicerContext
    ) -> Iterator[query_pb2.RunQueryResponse]:
        raise NotYetAvailableError("RunQuery", "the DP query engine and the privacy ledger")
        yield  # pragma: no cover - makes this a streaming handler

    @translate_errors
    def GetBudget(
        self, request: query_pb2.GetBudgetRequest, context: grpc.ServicerContext
    ) -> query_pb2.GetBudgetResponse:
        raise NotYetAvailableError("GetBudget", "the privacy ledger (issue 6)")

    @translate_errors
    def ListReleases(
        self, request: query_pb2.ListReleasesRequest, context: grpc.ServicerContext
    ) -> query_pb2.ListReleasesResponse:
        raise NotYetAvailableError("ListReleases", "the privacy ledger (issue 6)")


def _require(value: str, field: str) -> None:
    if not value:
        raise BadRequestError("MISSING_FIELD", f"{field} is required", field)

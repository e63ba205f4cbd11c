"""`Client`: what a planner uses, from a script or a notebook."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from types import TracebackType
from typing import TypeVar

import grpc
import polars as pl

from dpgate._convert import column_info, dataset_info, key_value
from dpgate._proto.dpgate.v1 import query_pb2, query_pb2_grpc
from dpgate._types import DatasetDescription, DatasetInfo
from dpgate.errors import from_rpc_error

_T = TypeVar("_T")


class Client:
    """A connection to a dpgate server as an analyst.

    Example:
        >>> with Client("127.0.0.1:50051", token="dpg_...") as client:  # doctest: +SKIP
        ...     [d.dataset_id for d in client.datasets()]
        ['gp_appointments']

    Args:
        target: host:port of the server.
        token: the bearer token an administrator issued (sent on every call).
        root_certificates: PEM of the CA to trust; with it the connection uses TLS.
        timeout: seconds each call may take.
    """

    def __init__(
        self,
        target: str,
        token: str | None = None,
        *,
        root_certificates: bytes | None = None,
        timeout: float = 60.0,
    ) -> None:
        if root_certificates is None:
            self._channel = grpc.insecure_channel(target)
        else:
            credentials = grpc.ssl_channel_credentials(root_certificates=root_certificates)
            self._channel = grpc.secure_channel(target, credentials)
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self._timeout = timeout
        self._queries = query_pb2_grpc.QueryServiceStub(self._channel)

    def datasets(self) -> list[DatasetInfo]:
        """The datasets the server holds, with their current versions."""
        reply = self._call(self._queries.ListDatasets, query_pb2.ListDatasetsRequest())
        return [dataset_info(d) for d in reply.datasets]

    def describe(self, dataset_id: str) -> DatasetDescription:
        """A dataset's columns, public key sets and public tables."""
        reply = self._call(
            self._queries.DescribeDataset,
            query_pb2.DescribeDatasetRequest(dataset_id=dataset_id),
        )
        return DatasetDescription(
            dataset=dataset_info(reply.dataset),
            columns=tuple(column_info(c) for c in reply.columns),
            public_tables={t.name: tuple(t.columns) for t in reply.public_tables},
        )

    def public_table(self, dataset_id: str, table: str) -> pl.DataFrame:
        """A public table (e.g. "practices" with list sizes) as a Polars frame."""
        request = query_pb2.StreamPublicTableRequest(dataset_id=dataset_id, table=table)
        columns: list[str] = []
        rows: list[tuple[object, ...]] = []
        for chunk in self._stream(self._queries.StreamPublicTable, request):
            columns = columns or list(chunk.columns)
            rows.extend(tuple(key_value(v) for v in row.values) for row in chunk.rows)
        return pl.DataFrame(rows, schema=columns, orient="row")

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _call(self, method: Callable[..., _T], request: object) -> _T:
        try:
            return method(request, metadata=self._metadata, timeout=self._timeout)
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None

    def _stream(self, method: Callable[..., Iterator[_T]], request: object) -> Iterator[_T]:
        try:
            yield from method(request, metadata=self._metadata, timeout=self._timeout)
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None

"""`Client`: what a planner uses, from a script or a notebook."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable, Sequence
from typing import Literal, TypeVar

import polars as pl

from dpgate._channel import Connection
from dpgate._convert import (
    bias_figure,
    budget_info,
    column_info,
    contribution_bounds,
    dataset_info,
    key_value,
    preview_result,
    query_result,
    release_info,
)
from dpgate._query import QuerySpec
from dpgate._question_sets import SetPreview, preview_set_request, set_preview, set_results
from dpgate._retry import RetryPolicy, call_with_retries
from dpgate._types import (
    BudgetInfo,
    DatasetDescription,
    DatasetInfo,
    PreviewResult,
    QueryResult,
    ReleaseInfo,
)
from dpgate_proto.v1 import query_pb2, query_pb2_grpc
from dpgate_shared.units import Amount

_T = TypeVar("_T")

Derive = Literal["if_as_accurate", "if_any", "fresh"]
"""Whether `Client.query` may answer from a release already made (see its docstring)."""
_DERIVE: dict[str, query_pb2.DerivePreference.ValueType] = {
    "if_as_accurate": query_pb2.DERIVE_PREFERENCE_IF_AS_ACCURATE,
    "if_any": query_pb2.DERIVE_PREFERENCE_IF_ANY,
    "fresh": query_pb2.DERIVE_PREFERENCE_FRESH,
}

MAX_RELEASES_PAGE = 1000
"""The most releases the server sends in one page."""


class Client(Connection):
    """A connection to a dpgate server as an analyst.

    Example:
        >>> with Client("127.0.0.1:50051", token="dpg_...") as client:  # doctest: +SKIP
        ...     [d.dataset_id for d in client.datasets()]
        ['gp_appointments']

        Several replicas: `Client(["10.0.0.1:50051", "10.0.0.2:50051"], token=...)`, or
        `Client("10.0.0.1:50051,10.0.0.2:50051", token=...)`, or one DNS name for them all.

    Args:
        target: host:port of the server; or of its replicas, as a list or one
            comma-separated string (calls are spread over them and go on when one fails).
        token: the bearer token an administrator issued (sent on every call).
        root_certificates: PEM of the CA to trust; with it the connection uses TLS.
        private_key: PEM client key, for servers that require mutual TLS.
        certificate_chain: PEM client certificate, likewise.
        timeout: seconds each call may take.
        retries: how often a call is retried when the server is busy or cannot be
            reached (`OverloadedError`, `ServerUnavailableError`), with exponential
            backoff and jitter: a number of retries, or a `RetryPolicy`. A retried query
            keeps its idempotency key, so it is never charged twice; with several
            replicas, the retry goes to another replica.
    """

    def __init__(
        self,
        target: str | Sequence[str],
        token: str | None = None,
        *,
        root_certificates: bytes | None = None,
        private_key: bytes | None = None,
        certificate_chain: bytes | None = None,
        timeout: float = 300.0,
        retries: int | RetryPolicy = 3,
    ) -> None:
        super().__init__(
            target,
            token,
            root_certificates=root_certificates,
            private_key=private_key,
            certificate_chain=certificate_chain,
            timeout=timeout,
        )
        self._retry = retries if isinstance(retries, RetryPolicy) else RetryPolicy(retries)
        self._queries = query_pb2_grpc.QueryServiceStub(self._channel)

    def datasets(self) -> list[DatasetInfo]:
        """The datasets the server holds, with their current versions."""
        reply = self._read(self._queries.ListDatasets, query_pb2.ListDatasetsRequest())
        return [dataset_info(d) for d in reply.datasets]

    def describe(self, dataset_id: str) -> DatasetDescription:
        """A dataset's columns, public key sets and public tables."""
        reply = self._read(
            self._queries.DescribeDataset,
            query_pb2.DescribeDatasetRequest(dataset_id=dataset_id),
        )
        return DatasetDescription(
            dataset=dataset_info(reply.dataset),
            columns=tuple(column_info(c) for c in reply.columns),
            public_tables={t.name: tuple(t.columns) for t in reply.public_tables},
            bounds=contribution_bounds(reply.bounds) if reply.HasField("bounds") else None,
            bias_figure=bias_figure(reply.bias_figure, reply.dataset.version)
            if reply.HasField("bias_figure")
            else None,
        )

    def public_table(self, dataset_id: str, table: str) -> pl.DataFrame:
        """A public table (e.g. "practices" with list sizes) as a Polars frame."""
        request = query_pb2.StreamPublicTableRequest(dataset_id=dataset_id, table=table)

        def read() -> pl.DataFrame:
            columns: list[str] = []
            rows: list[tuple[object, ...]] = []
            for chunk in self._stream(self._queries.StreamPublicTable, request):
                columns = columns or list(chunk.columns)
                rows.extend(tuple(key_value(v) for v in row.values) for row in chunk.rows)
            return pl.DataFrame(rows, schema=columns, orient="row")

        return self._retried(read)

    def preview(self, query: QuerySpec, *, expected: float | None = None) -> PreviewResult:
        """The cost and interval half-width of `query`; free, reads no data.

        Args:
            query: the question.
            expected: what you expect a cell to be; the result then also gives the
                half-width as a fraction of it (`rel_half_width_expected`). Per cell:
                `preview(query).relative_to(frame_of_expected_values)`.
        """
        if expected is not None and (
            isinstance(expected, bool) or not isinstance(expected, float | int)
        ):
            raise TypeError("expected must be a number (per cell: use .relative_to(frame))")
        reply = self._read(
            self._queries.PreviewQuery,
            query_pb2.PreviewQueryRequest(query=query.to_proto()),
            query=True,
        )
        result = preview_result(reply)
        if expected is None:
            return result
        return dataclasses.replace(result, expected=float(expected))

    def query(
        self,
        query: QuerySpec,
        *,
        idempotency_key: str | None = None,
        derive: Derive = "fresh",
    ) -> QueryResult:
        """Run `query`: a DP answer charged to your budget (free if it repeats a release).

        If cells of a release you may receive on the current version add up to the answer,
        it can be derived from them, free (`result.derived_from` names the release):
        `derive="if_as_accurate"` when its intervals are no wider than the fresh answer's at
        the spend or accuracy asked, `"if_any"` however wide; `"fresh"` (the default) never:
        a fresh, charged release, as before derived answers. `preview` shows both options.

        A busy or unreachable server is retried with the same idempotency key, so a
        retried call is charged once, and its answer is the first attempt's (same release,
        same charge). Raises BudgetExhaustedError, InvalidQueryError, ... (dpgate.errors).
        """
        if derive not in _DERIVE:
            raise ValueError(f"derive must be one of {sorted(_DERIVE)}, not {derive!r}")
        request = query_pb2.RunQueryRequest(
            query=query.to_proto(),
            idempotency_key=idempotency_key or uuid.uuid4().hex,
            cell_format=query_pb2.CELL_FORMAT_ARROW_IPC,
            derive=_DERIVE[derive],
        )
        return self._retried(
            lambda: query_result(self._stream(self._queries.RunQuery, request, query=True))
        )

    def preview_set(
        self,
        queries: Sequence[QuerySpec],
        *,
        total_epsilon: Amount | None = None,
        total_rho: Amount | None = None,
        expected: Sequence[float] | None = None,
    ) -> SetPreview:
        """Preview several queries at once: each one's cost and interval, and their total.

        With `total_epsilon` (or `total_rho` on a zCDP dataset), also a split of that total
        between them that makes every query's interval the same fraction of the cell value
        you expect of it (`expected`, one per query; none: equal half-widths). Run the split
        with `run_set([q.epsilon(m.split.spend) ...])`. Free; reads no data.
        """
        request = preview_set_request(queries, total_epsilon, total_rho, expected)
        reply = self._read(self._queries.PreviewQuerySet, request, query=True)
        return set_preview(reply)

    def run_set(
        self, queries: Sequence[QuerySpec], *, idempotency_key: str | None = None
    ) -> list[QueryResult]:
        """Run several queries all or nothing: every answer released and their sum charged
        in one step, or (a failed query, a budget short of the sum) nothing released and
        nothing charged. Queries already released to you are free repeats. A retried call
        keeps its idempotency key and replays the first answers, charged once.
        """
        request = query_pb2.RunQuerySetRequest(
            queries=[q.to_proto() for q in queries],
            idempotency_key=idempotency_key or uuid.uuid4().hex,
            cell_format=query_pb2.CELL_FORMAT_ARROW_IPC,
        )
        return self._retried(
            lambda: set_results(
                self._stream(self._queries.RunQuerySet, request, query=True), len(queries)
            )
        )

    def budget(self, dataset_id: str = "") -> list[BudgetInfo]:
        """Your budgets (on one dataset, or all)."""
        reply = self._read(
            self._queries.GetBudget, query_pb2.GetBudgetRequest(dataset_id=dataset_id)
        )
        return [budget_info(b) for b in reply.budgets]

    def releases(self, dataset_id: str = "", *, limit: int | None = None) -> list[ReleaseInfo]:
        """Your earlier releases, newest first: all of them, or the `limit` newest (only
        the pages needed are fetched)."""
        if limit is not None and limit < 1:
            raise ValueError("limit must be at least 1")
        found: list[ReleaseInfo] = []
        token = ""
        while limit is None or len(found) < limit:
            wanted = 0 if limit is None else min(limit - len(found), MAX_RELEASES_PAGE)
            reply = self._read(
                self._queries.ListReleases,
                query_pb2.ListReleasesRequest(
                    dataset_id=dataset_id, page_token=token, page_size=wanted
                ),
            )
            found.extend(release_info(r) for r in reply.releases)
            token = reply.next_page_token
            if not token:
                break
        return found if limit is None else found[:limit]

    def _read(self, method: Callable[..., _T], request: object, *, query: bool = False) -> _T:
        """A unary call that changes nothing (or is idempotent), retried by the policy."""
        return self._retried(lambda: self._call(method, request, query=query))

    def _retried(self, call: Callable[[], _T]) -> _T:
        return call_with_retries(call, self._retry)

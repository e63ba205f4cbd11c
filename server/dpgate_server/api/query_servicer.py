"""QueryService: what analysts call. Thin: convert, call one domain function, convert back."""

from __future__ import annotations

from collections.abc import Iterator

import grpc

from dpgate_proto.v1 import query_pb2, query_pb2_grpc
from dpgate_server.answers import Answer, QueryAnswerer
from dpgate_server.api.call_context import current_call
from dpgate_server.api.convert import (
    answer_to_proto,
    budget_to_proto,
    dataset_summary_to_proto,
    derive_preference_from_proto,
    derived_summary_to_proto,
    describe_to_proto,
    preview_to_proto,
    public_rows_to_proto,
    query_from_proto,
    spend_to_proto,
)
from dpgate_server.api.errors import BadRequestError, audited, require
from dpgate_server.api.question_set_convert import (
    queries_from_proto,
    set_answers_to_proto,
    set_preview_to_proto,
    total_from_proto,
)
from dpgate_server.ledger import errors as ledger_errors
from dpgate_server.ledger.ledger import Ledger
from dpgate_server.ledger.model import DerivedRecord
from dpgate_server.queries.model import Release
from dpgate_server.question_sets import QuestionSets
from dpgate_server.store.catalog import Catalog
from dpgate_server.store.publish_records import BiasFigure
from dpgate_server.vocabulary.errors import DatasetNotFoundError, ErrorReason

MAX_PAGE_SIZE = 1000
MAX_IDEMPOTENCY_KEY_LENGTH = 128


class QueryServicer(query_pb2_grpc.QueryServiceServicer):
    """Analysts' RPCs; every decision is in the catalog, the answerer or the ledger."""

    def __init__(self, catalog: Catalog, ledger: Ledger, answerer: QueryAnswerer) -> None:
        self._catalog = catalog
        self._ledger = ledger
        self._answerer = answerer
        self._question_sets = QuestionSets(answerer, ledger)

    @audited(record_success=True)
    def ListDatasets(
        self, request: query_pb2.ListDatasetsRequest, context: grpc.ServicerContext
    ) -> query_pb2.ListDatasetsResponse:
        versions = self._catalog.current_versions()
        return query_pb2.ListDatasetsResponse(
            datasets=[dataset_summary_to_proto(v) for v in versions]
        )

    @audited(record_success=True)
    def DescribeDataset(
        self, request: query_pb2.DescribeDatasetRequest, context: grpc.ServicerContext
    ) -> query_pb2.DescribeDatasetResponse:
        require(request.dataset_id, "dataset_id")
        version = self._catalog.current(request.dataset_id)
        reply = describe_to_proto(version, self._catalog.public_tables(version))
        requester_id = current_call().principal.requester_id
        try:
            budget = self._ledger.get_budget(requester_id, request.dataset_id)
        except (ledger_errors.NotFound, DatasetNotFoundError):
            return reply
        reply.budget.CopyFrom(budget_to_proto(budget, version.metadata.accounting))
        return reply

    @audited(record_success=True)
    def StreamPublicTable(
        self, request: query_pb2.StreamPublicTableRequest, context: grpc.ServicerContext
    ) -> Iterator[query_pb2.StreamPublicTableResponse]:
        require(request.dataset_id, "dataset_id")
        require(request.table, "table")
        first = True
        for chunk in self._catalog.read_public_table(request.dataset_id, request.table):
            yield query_pb2.StreamPublicTableResponse(
                columns=list(chunk.columns) if first else [],
                rows=public_rows_to_proto(chunk.rows),
            )
            first = False

    @audited(record_success=True)
    def PreviewQuery(
        self, request: query_pb2.PreviewQueryRequest, context: grpc.ServicerContext
    ) -> query_pb2.PreviewQueryResponse:
        requester_id = current_call().principal.requester_id
        return preview_to_proto(
            self._answerer.preview(query_from_proto(request.query), requester_id)
        )

    @audited(record_success=False)  # debit, or the repeat lookup, writes the event
    def RunQuery(
        self, request: query_pb2.RunQueryRequest, context: grpc.ServicerContext
    ) -> Iterator[query_pb2.RunQueryResponse]:
        _check_idempotency_key(request.idempotency_key)
        call = current_call()
        answer = self._answerer.answer(
            call.principal,
            call.request_info(),
            query_from_proto(request.query),
            request.idempotency_key or None,
            caller_deadline_s=context.time_remaining(),
            derive=derive_preference_from_proto(request.derive),
        )
        yield from answer_to_proto(answer, request.cell_format, self._bias_figure(answer))

    @audited(record_success=True)
    def GetBudget(
        self, request: query_pb2.GetBudgetRequest, context: grpc.ServicerContext
    ) -> query_pb2.GetBudgetResponse:
        requester_id = current_call().principal.requester_id
        versions = (
            [self._catalog.current(request.dataset_id)]
            if request.dataset_id
            else self._catalog.current_versions()
        )
        budgets = []
        for version in versions:
            try:
                budget = self._ledger.get_budget(requester_id, version.dataset_id)
            except (ledger_errors.NotFound, DatasetNotFoundError):
                continue
            budgets.append(budget_to_proto(budget, version.metadata.accounting))
        return query_pb2.GetBudgetResponse(budgets=budgets)

    @audited(record_success=True)
    def ListReleases(
        self, request: query_pb2.ListReleasesRequest, context: grpc.ServicerContext
    ) -> query_pb2.ListReleasesResponse:
        requester_id = current_call().principal.requester_id
        size = min(request.page_size or 100, MAX_PAGE_SIZE)
        try:
            page = self._ledger.page_releases(
                requester_id,
                request.dataset_id or None,
                after=request.page_token or None,
                limit=size,
            )
        except ledger_errors.ReleaseNotFound:
            raise BadRequestError(
                ErrorReason.BAD_PAGE_TOKEN,
                "page_token must be one returned by ListReleases",
                "page_token",
            ) from None
        summaries = []
        for item in page.releases:
            if isinstance(item, DerivedRecord):
                summaries.append(derived_summary_to_proto(item))
                continue
            release = Release.from_bytes(item.payload)
            summaries.append(
                query_pb2.ReleaseSummary(
                    release_id=item.release_id,
                    dataset_id=item.dataset_id,
                    dataset_version=release.dataset_version,
                    canonical_query=release.query.to_json(),
                    cost=spend_to_proto(release.accounting, item.cost_units),
                    created_at=item.created_at.isoformat(),
                )
            )
        return query_pb2.ListReleasesResponse(
            releases=summaries, next_page_token=page.next_after or ""
        )

    @audited(record_success=True)
    def PreviewQuerySet(
        self, request: query_pb2.PreviewQuerySetRequest, context: grpc.ServicerContext
    ) -> query_pb2.PreviewQuerySetResponse:
        preview = self._question_sets.preview(
            queries_from_proto(request.queries),
            total_from_proto(request),
            list(request.expected_values),
        )
        return set_preview_to_proto(preview)

    @audited(record_success=False)  # the set's debit, or its refusal, writes the events
    def RunQuerySet(
        self, request: query_pb2.RunQuerySetRequest, context: grpc.ServicerContext
    ) -> Iterator[query_pb2.RunQuerySetResponse]:
        _check_idempotency_key(request.idempotency_key)
        call = current_call()
        answers = self._question_sets.answer(
            call.principal,
            call.request_info(),
            queries_from_proto(request.queries),
            request.idempotency_key or None,
            caller_deadline_s=context.time_remaining(),
        )
        yield from set_answers_to_proto(answers, request.cell_format, self._bias_figure)

    def _bias_figure(self, answer: Answer) -> BiasFigure | None:
        """The stored bias figure of the version an answer was computed on (free)."""
        release = answer.release
        return self._catalog.bias_figure(release.dataset_id, release.dataset_version)


def _check_idempotency_key(key: str) -> None:
    if len(key) > MAX_IDEMPOTENCY_KEY_LENGTH:
        raise BadRequestError(
            ErrorReason.BAD_IDEMPOTENCY_KEY,
            f"idempotency_key is at most {MAX_IDEMPOTENCY_KEY_LENGTH} characters",
            "idempotency_key",
        )

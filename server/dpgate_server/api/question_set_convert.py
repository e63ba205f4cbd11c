"""Conversions for question sets (PreviewQuerySet, RunQuerySet); no decisions here."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

from dpgate_proto.v1 import query_pb2, types_pb2
from dpgate_server.answers import Answer, RequesterPreview
from dpgate_server.api.convert import (
    answer_to_proto,
    preview_to_proto,
    query_from_proto,
    spend_to_proto,
)
from dpgate_server.api.errors import BadRequestError
from dpgate_server.queries.model import Query, Spend, SpendMeasure
from dpgate_server.question_sets import SetPreview
from dpgate_server.spend import units_to_decimal
from dpgate_server.store.publish_records import BiasFigure
from dpgate_server.vocabulary.errors import ErrorReason

_MEASURE_OF = {
    types_pb2.ACCOUNTING_PURE_DP: SpendMeasure.EPSILON,
    types_pb2.ACCOUNTING_ZCDP: SpendMeasure.RHO,
}


def queries_from_proto(messages: Sequence[query_pb2.Query]) -> list[Query]:
    """The members; a member the converter refuses is named."""
    queries = []
    for index, message in enumerate(messages):
        try:
            queries.append(query_from_proto(message))
        except BadRequestError as error:
            error.message = f"question set member {index}: {error.message}"
            error.metadata = {**error.metadata, "member": str(index)}
            raise
    return queries


def total_from_proto(request: query_pb2.PreviewQuerySetRequest) -> Spend | None:
    """The total to split, or None when the request gives none."""
    if not request.HasField("total"):
        return None
    measure = _MEASURE_OF.get(request.total.accounting)
    if measure is None:
        raise BadRequestError(
            ErrorReason.BAD_SPEND,
            "total.accounting must be ACCOUNTING_PURE_DP (an epsilon) or ACCOUNTING_ZCDP (a rho)",
            "total.accounting",
        )
    return Spend(measure, units_to_decimal(request.total.nano_units))


def set_preview_to_proto(preview: SetPreview) -> query_pb2.PreviewQuerySetResponse:
    reply = query_pb2.PreviewQuerySetResponse(
        stated_total=spend_to_proto(preview.accounting, preview.stated_total_units),
        split_relative_half_width=preview.split_relative_half_width or 0.0,
    )
    for member in preview.members:
        message = reply.members.add()
        message.stated.CopyFrom(preview_to_proto(RequesterPreview(member.stated, None)))
        if member.split is not None:
            message.split.CopyFrom(preview_to_proto(RequesterPreview(member.split, None)))
            message.split_relative_half_width = member.split_relative_half_width or 0.0
    return reply


def set_answers_to_proto(
    answers: Sequence[Answer],
    cell_format: query_pb2.CellFormat.ValueType,
    bias_figure: Callable[[Answer], BiasFigure | None] = lambda answer: None,
) -> Iterator[query_pb2.RunQuerySetResponse]:
    """Each member's RunQuery messages in turn, tagged with its index (with the stored bias
    figure of its version, `bias_figure(answer)`)."""
    for index, answer in enumerate(answers):
        for part in answer_to_proto(answer, cell_format, bias_figure(answer)):
            yield query_pb2.RunQuerySetResponse(member=index, part=part)

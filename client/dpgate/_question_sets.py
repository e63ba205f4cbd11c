"""Question sets on the client: the preview's types and the wire conversions.

A set is previewed (each member's cost and interval, their total, and a split of a total
that gives every member the same relative accuracy) and run all or nothing: every member
released and the sum charged at once, or nothing released and nothing charged.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal

from dpgate._convert import accounting_name, preview_result, query_result, spend
from dpgate._query import QuerySpec
from dpgate._types import PreviewResult, QueryResult
from dpgate_proto.v1 import query_pb2, types_pb2
from dpgate_shared.units import Amount, spend_to_units, to_decimal

_ACCOUNTING_OF = {"epsilon": types_pb2.ACCOUNTING_PURE_DP, "rho": types_pb2.ACCOUNTING_ZCDP}


@dataclass(frozen=True, slots=True)
class SetMemberPreview:
    """One query of a previewed set.

    Attributes:
        stated: the query at the spend it states.
        split: the query at its share of the total (None without a total).
        split_relative_half_width: split.half_width / the expected cell value you gave
            (None without a total).
    """

    stated: PreviewResult
    split: PreviewResult | None
    split_relative_half_width: float | None


@dataclass(frozen=True, slots=True)
class SetPreview:
    """A previewed question set (free; reads no data).

    Attributes:
        members: in the order asked.
        accounting: "pure_dp" (epsilon) or "zcdp" (rho), the one of every member.
        stated_total: what running the queries as stated costs at most (members already
            released to you are free).
        split_relative_half_width: the common relative half-width the split aims for
            (None without a total).
    """

    members: tuple[SetMemberPreview, ...]
    accounting: str
    stated_total: Decimal
    split_relative_half_width: float | None

    @property
    def split_spends(self) -> tuple[Decimal, ...]:
        """Each member's share of the total (empty without a total)."""
        return tuple(m.split.spend for m in self.members if m.split is not None)


def preview_set_request(
    queries: Sequence[QuerySpec],
    total_epsilon: Amount | None,
    total_rho: Amount | None,
    expected: Sequence[float] | None,
) -> query_pb2.PreviewQuerySetRequest:
    if total_epsilon is not None and total_rho is not None:
        raise ValueError("give total_epsilon or total_rho, not both")
    request = query_pb2.PreviewQuerySetRequest(
        queries=[q.to_proto() for q in queries], expected_values=list(expected or ())
    )
    for measure, total in (("epsilon", total_epsilon), ("rho", total_rho)):
        if total is not None:
            units = spend_to_units(to_decimal(total, f"total_{measure}"))
            request.total.CopyFrom(
                types_pb2.Spend(accounting=_ACCOUNTING_OF[measure], nano_units=units)
            )
    return request


def set_preview(message: query_pb2.PreviewQuerySetResponse) -> SetPreview:
    members = tuple(
        SetMemberPreview(
            stated=preview_result(m.stated),
            split=preview_result(m.split) if m.HasField("split") else None,
            split_relative_half_width=(
                m.split_relative_half_width if m.HasField("split") else None
            ),
        )
        for m in message.members
    )
    has_split = any(m.split is not None for m in members)
    return SetPreview(
        members=members,
        accounting=accounting_name(message.stated_total),
        stated_total=spend(message.stated_total),
        split_relative_half_width=message.split_relative_half_width if has_split else None,
    )


def set_results(parts: Iterable[query_pb2.RunQuerySetResponse], count: int) -> list[QueryResult]:
    """Each member's streamed parts assembled into its result, in the order asked."""
    by_member: list[list[query_pb2.RunQueryResponse]] = [[] for _ in range(count)]
    for part in parts:
        if part.member >= count:
            raise ValueError(f"the server sent a part of member {part.member} of {count}")
        by_member[part.member].append(part.part)
    return [query_result(member) for member in by_member]

"""Question sets: several queries previewed together, and run all or nothing (issue 18.4).

A planner's questions are usually asked together and only useful together. Previewing a
set gives each member's cost and interval and, for a total spend, a split of that total
that makes every member's interval the same fraction of the cell value the planner expects
(queries/set_split.py; the half-widths come from the same interval code as every preview).

Running a set keeps DESIGN.md's order for every member (check, price, settle repeats,
compute in a worker, debit before anything leaves) with one change: the debit of every
member is ONE ledger transaction (`Ledger.debit_set`). So either every member is released
and the sum is charged, or, if a member's computation fails or the budget cannot pay the
sum, nothing is released and nothing charged; a server killed mid-set has committed all of
it or none. Members the requester already holds are served free as repeats. The set's
idempotency key gives each member its own key (`<key>#<index>`), so a retried set replays
every member's first answer and is charged nothing more.

All members on one dataset read the one version leased for the whole set, so a publish in
the middle of a set cannot split it across versions.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import TypeVar

from dpgate_server.answers import Answer, QueryAnswerer, _same_question
from dpgate_server.ledger.errors import BudgetExhausted
from dpgate_server.ledger.ledger import Ledger, SetMember
from dpgate_server.ledger.model import DebitResult, Principal, RequestInfo
from dpgate_server.queries import engine
from dpgate_server.queries.errors import InvalidQuery
from dpgate_server.queries.model import Query, Spend, SpendMeasure
from dpgate_server.queries.set_split import split_total
from dpgate_server.spend import describe, to_units_floor, units_to_decimal
from dpgate_server.store.store import DatasetVersion
from dpgate_server.vocabulary.accounting import Accounting
from dpgate_server.vocabulary.errors import DomainError, ErrorReason

_T = TypeVar("_T")

MAX_SET_SIZE = 50
"""The most queries one set may hold (each is computed in turn before the one debit)."""

MEMBER_KEY_SEPARATOR = "#"
"""A member's idempotency key is the set's, this, and the member's index."""


@dataclass(frozen=True, slots=True)
class MemberPreview:
    """One member of a previewed set.

    Attributes:
        stated: the member at the spend it states.
        split: the member at its share of the total (None without a total).
        split_relative_half_width: split's half-width / the expected cell value.
    """

    stated: engine.Preview
    split: engine.Preview | None
    split_relative_half_width: float | None


@dataclass(frozen=True, slots=True)
class SetPreview:
    """A previewed question set.

    Attributes:
        members: in request order.
        accounting: the one accounting of every member.
        stated_total_units: the sum of the members' stated spends.
        split_relative_half_width: the common relative half-width the split aims for.
    """

    members: tuple[MemberPreview, ...]
    accounting: Accounting
    stated_total_units: int
    split_relative_half_width: float | None


class QuestionSets:
    """Previews and answers question sets with a `QueryAnswerer`'s steps and one debit."""

    def __init__(self, answerer: QueryAnswerer, ledger: Ledger) -> None:
        self._answerer = answerer
        self._ledger = ledger

    def preview(
        self,
        queries: Sequence[Query],
        total: Spend | None = None,
        expected_values: Sequence[float] = (),
    ) -> SetPreview:
        """Each member's cost and accuracy, their sum, and a split of `total`; free.

        Raises:
            InvalidQuery: an empty or oversized set, mixed accounting, a total in the
                other measure or too small to split, expected values that are not one
                positive number per member; or a member's own refusal, naming it.
        """
        _check_size(queries)
        if expected_values and len(expected_values) != len(queries):
            raise InvalidQuery(
                ErrorReason.BAD_VALUE,
                "expected_values",
                f"give one expected cell value per query ({len(queries)}), or none",
            )
        for index, value in enumerate(expected_values):
            if not (math.isfinite(value) and value > 0):
                raise InvalidQuery(
                    ErrorReason.BAD_VALUE,
                    f"expected_values[{index}]",
                    "an expected cell value must be a positive number",
                )
        expected = list(expected_values) or [1.0] * len(queries)
        with self._versions(queries) as versions:
            stated = [
                _as_member(
                    i, functools.partial(self._answerer.summarize, versions[q.dataset_id], q)
                )
                for i, q in enumerate(queries)
            ]
            accounting = _one_accounting([Accounting(p.accounting) for p in stated])
            stated_total = sum(p.spend_units for p in stated)
            if total is None:
                members = tuple(MemberPreview(p, None, None) for p in stated)
                return SetPreview(members, accounting, stated_total, None)
            total_units = _total_units(total, accounting, len(queries))
            split = split_total(
                total_units,
                [max(p.half_width, 1) for p in stated],
                [p.spend_units for p in stated],
                expected,
                accounting,
            )
            if min(split.spend_units) <= 0:
                raise InvalidQuery(
                    ErrorReason.BAD_SPEND,
                    "total",
                    f"{describe(total_units, accounting)} is too small to give every query a"
                    " share; raise it or drop queries",
                )
            measure = _measure(accounting)
            shared = []
            for i, (query, units) in enumerate(zip(queries, split.spend_units, strict=True)):
                at_share = dataclasses.replace(
                    query, spend=Spend(measure, units_to_decimal(units)), target_half_width=None
                )
                version = versions[query.dataset_id]
                shared.append(
                    _as_member(i, functools.partial(self._answerer.summarize, version, at_share))
                )
        members = tuple(
            MemberPreview(p, s, s.half_width / e)
            for p, s, e in zip(stated, shared, expected, strict=True)
        )
        return SetPreview(members, accounting, stated_total, split.relative_half_width)

    def answer(
        self,
        principal: Principal,
        request: RequestInfo,
        queries: Sequence[Query],
        idempotency_key: str | None,
        caller_deadline_s: float | None = None,
    ) -> list[Answer]:
        """Answer every member, charging their sum at once, or none of them.

        Raises:
            InvalidQuery: an empty or oversized set, mixed accounting, or a member's own
                refusal (nothing computed or spent).
            BudgetExhausted: the set's sum cannot be paid (nothing released or charged).
            Whatever a member's computation raises (a crashed worker, a deadline): nothing
                released or charged. Every member error names the member.
        """
        _check_size(queries)
        started = time.monotonic()
        timeout_s = self._answerer.timeout_s
        if caller_deadline_s is not None:
            timeout_s = max(0.001, min(timeout_s, caller_deadline_s))
        requester_id = principal.requester_id
        with self._versions(queries) as versions:
            prepared = [
                _as_member(i, functools.partial(self._answerer.prepare, versions[q.dataset_id], q))
                for i, q in enumerate(queries)
            ]
            _one_accounting([p.query.accounting for p in prepared])
            keys = [
                None if not idempotency_key else f"{idempotency_key}{MEMBER_KEY_SEPARATOR}{i}"
                for i in range(len(queries))
            ]
            settled = [
                _as_member(i, functools.partial(self._precheck, principal, request, p, keys[i]))
                for i, p in enumerate(prepared)
            ]
            pending = [i for i, result in enumerate(settled) if result is None]
            self._check_sum(requester_id, [prepared[i] for i in pending])
            members: list[SetMember] = []
            for i in pending:
                left_s = max(0.001, timeout_s - (time.monotonic() - started))
                payload = _as_member(
                    i, functools.partial(self._answerer.compute, prepared[i], left_s)
                )
                members.append(_set_member(prepared[i], keys[i], payload))
            charged = self._ledger.debit_set(requester_id, members, request) if members else []
        results = list(settled)
        for i, result in zip(pending, charged, strict=True):
            results[i] = result
        return [
            self._answerer.served(result, query)
            for result, query in zip(_all(results), queries, strict=True)
        ]

    def _precheck(
        self,
        principal: Principal,
        request: RequestInfo,
        prepared: engine.PreparedQuery,
        idempotency_key: str | None,
    ) -> DebitResult | None:
        """A member settled without computing (a retry or a repeat), else None."""
        return self._ledger.precheck_debit(
            principal.requester_id,
            prepared.query.dataset_id,
            prepared.key,
            idempotency_key=idempotency_key,
            cost_units=prepared.cost_units,
            request=dataclasses.replace(request, query_text=prepared.query.to_json()),
            same_question=functools.partial(_same_question, asked=prepared.query),
        )

    def _check_sum(self, requester_id: str, pending: Sequence[engine.PreparedQuery]) -> None:
        """Refuse before computing a set whose sum cannot be paid now (the debit decides
        again, exactly, in its transaction)."""
        by_dataset: dict[str, int] = {}
        for prepared in pending:
            dataset_id = prepared.query.dataset_id
            by_dataset[dataset_id] = by_dataset.get(dataset_id, 0) + prepared.cost_units
        for dataset_id, cost in by_dataset.items():
            budget = self._ledger.get_budget(requester_id, dataset_id)
            if cost > budget.remaining_units:
                accounting = pending[0].query.accounting
                error = BudgetExhausted(cost, budget.remaining_units, accounting=accounting)
                error.message = (
                    f"budget exhausted: the question set costs {describe(cost, accounting)}"
                    f" but only {describe(budget.remaining_units, accounting)} remains;"
                    " nothing was released or charged"
                )
                raise error

    @contextmanager
    def _versions(self, queries: Sequence[Query]) -> Iterator[dict[str, DatasetVersion]]:
        """One leased current version per dataset the set asks, held for the whole set."""
        with ExitStack() as stack:
            versions: dict[str, DatasetVersion] = {}
            for index, query in enumerate(queries):
                if query.dataset_id not in versions:
                    versions[query.dataset_id] = _as_member(
                        index,
                        functools.partial(
                            stack.enter_context, self._answerer.reading(query.dataset_id)
                        ),
                    )
            yield versions


def _check_size(queries: Sequence[Query]) -> None:
    if not queries:
        raise InvalidQuery(ErrorReason.MISSING_FIELD, "queries", "a question set needs a query")
    if len(queries) > MAX_SET_SIZE:
        raise InvalidQuery(
            ErrorReason.TOO_MANY_VALUES,
            "queries",
            f"a question set holds at most {MAX_SET_SIZE} queries; split it",
        )


def _as_member(index: int, step: Callable[[], _T]) -> _T:
    """Run one member's step; a refusal says which member it was."""
    try:
        return step()
    except DomainError as error:
        error.message = f"question set member {index}: {error.message}"
        error.metadata = {**error.metadata, "member": str(index)}
        raise


def _one_accounting(accountings: Sequence[Accounting]) -> Accounting:
    """The set's one accounting; a set mixing epsilon and rho cannot be added up."""
    first = accountings[0]
    for index, accounting in enumerate(accountings):
        if accounting != first:
            raise InvalidQuery(
                ErrorReason.WRONG_ACCOUNTING,
                f"queries[{index}]",
                f"query {index} is on a {accounting} dataset but query 0 on a {first} one;"
                " a question set spends one measure (epsilon or rho): run them as two sets",
            )
    return first


def _measure(accounting: Accounting) -> str:
    return SpendMeasure.EPSILON if accounting is Accounting.PURE_DP else SpendMeasure.RHO


def _total_units(total: Spend, accounting: Accounting, count: int) -> int:
    """The total in ledger units, rounded down (a split never exceeds what was given)."""
    if total.measure != _measure(accounting):
        raise InvalidQuery(
            ErrorReason.WRONG_ACCOUNTING,
            "total",
            f"the set's queries spend {_measure(accounting)}; give the total in it",
        )
    try:
        units = to_units_floor(total.value)
    except ValueError:
        units = 0
    if units < count:
        raise InvalidQuery(
            ErrorReason.BAD_SPEND, "total", "the total must be positive, at least 1e-9 per query"
        )
    return units


def _set_member(prepared: engine.PreparedQuery, key: str | None, payload: bytes) -> SetMember:
    return SetMember(
        dataset_id=prepared.query.dataset_id,
        release_key=prepared.key,
        idempotency_key=key,
        cost_units=prepared.cost_units,
        payload=payload,
        query_text=prepared.query.to_json(),
        same_question=functools.partial(_same_question, asked=prepared.query),
        dataset_version=prepared.query.dataset_version,
    )


def _all(results: Sequence[DebitResult | None]) -> list[DebitResult]:
    done = [r for r in results if r is not None]
    if len(done) != len(results):  # pragma: no cover - every member is settled or charged
        raise RuntimeError("a question set member was neither settled nor charged")
    return done

"""Answering a query end to end: check, price, look up, run, debit (DESIGN.md guarantees 3-5).

The order is the guarantee. Everything that can refuse for free happens before any data
is read: validation and pricing (`engine.prepare`), the release lookup (a repeat is free
and gets no new noise), and a budget pre-check (so a request the budget cannot pay never
occupies a worker). Only then does a worker compute the noisy answer, and only after the
ledger has durably stored the release and its debit does the answer leave.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Protocol

from dpgate_server.ledger.errors import BudgetExhausted
from dpgate_server.ledger.ledger import Ledger
from dpgate_server.ledger.model import Outcome, Principal, RequestInfo
from dpgate_server.queries import engine
from dpgate_server.queries.accuracy import with_confidence_level
from dpgate_server.queries.limits import QueryLimits
from dpgate_server.queries.model import Query, Release
from dpgate_server.store.store import DatasetStore


class QueryExecutor(Protocol):
    """Runs a prepared query somewhere else (worker processes) and returns release bytes."""

    def execute(self, prepared: engine.PreparedQuery, timeout_s: float) -> bytes: ...


@dataclass(frozen=True, slots=True)
class Answer:
    """A released answer and what it cost the requester.

    Attributes:
        release: the noisy cells and their mechanism (intervals at the requested level).
        release_id: the ledger's id of the stored release.
        charged_units: what this request charged (0 for a repeat).
        remaining_units: the requester's remaining budget on the dataset afterwards.
        repeat: whether the answer is an earlier release served again for free.
    """

    release: Release
    release_id: str
    charged_units: int
    remaining_units: int
    repeat: bool


class QueryAnswerer:
    """The one place where a query turns into a charged release."""

    def __init__(
        self,
        store: DatasetStore,
        ledger: Ledger,
        executor: QueryExecutor,
        limits: QueryLimits,
        timeout_s: float,
    ) -> None:
        self._store = store
        self._ledger = ledger
        self._executor = executor
        self._limits = limits
        self._timeout_s = timeout_s

    def preview(self, query: Query) -> engine.Preview:
        """Cost and accuracy on the current version; free, reads no private rows."""
        return engine.preview(self._store.current(query.dataset_id), query, self._limits)

    def answer(
        self,
        principal: Principal,
        request: RequestInfo,
        query: Query,
        idempotency_key: str | None,
        caller_deadline_s: float | None = None,
    ) -> Answer:
        """Answer `query` for `principal`, charging its budget unless it is a repeat.

        `caller_deadline_s` is the time the caller still waits; the query is cancelled at
        the earlier of it and the configured timeout, so no one is charged for an answer
        computed after they stopped waiting.

        Raises:
            InvalidQuery: the query is malformed or not allowed (nothing spent).
            DatasetNotFoundError: no such dataset.
            BudgetExhausted: the cost exceeds what remains (recorded as refused).
            IdempotencyConflict: the idempotency key was used for another query.
            Whatever the executor raises for overload, deadline or a crashed worker.
        """
        version = self._store.current(query.dataset_id)
        prepared = engine.prepare(version, query, self._limits)
        request = dataclasses.replace(request, query_text=prepared.query.to_json())
        requester_id = principal.requester_id
        dataset_id = prepared.query.dataset_id

        stored = self._ledger.lookup_release(prepared.key, requester_id)
        if stored is not None:
            self._ledger.record_event(
                request, Outcome.ANSWERED, dataset_id=dataset_id, release_id=stored.release_id
            )
            remaining = self._ledger.get_budget(requester_id, dataset_id).remaining_units
            return self._answer(stored.payload, stored.release_id, 0, remaining, True, query)

        budget = self._ledger.get_budget(requester_id, dataset_id)
        if prepared.cost_units > budget.remaining_units:
            self._ledger.record_event(
                request, Outcome.REFUSED, dataset_id=dataset_id, cost_units=0, detail="budget"
            )
            raise BudgetExhausted(
                prepared.cost_units, budget.remaining_units, accounting=prepared.query.accounting
            )

        timeout_s = self._timeout_s
        if caller_deadline_s is not None:
            timeout_s = max(0.001, min(timeout_s, caller_deadline_s))
        payload = self._executor.execute(prepared, timeout_s)
        result = self._ledger.debit(
            requester_id,
            dataset_id,
            prepared.key,
            idempotency_key=idempotency_key or None,
            cost_units=prepared.cost_units,
            payload=payload,
            request=request,
        )
        return self._answer(
            result.release.payload,
            result.release.release_id,
            result.charged_units,
            result.remaining_units,
            result.repeat,
            query,
        )

    def _answer(
        self,
        payload: bytes,
        release_id: str,
        charged: int,
        remaining: int,
        repeat: bool,
        query: Query,
    ) -> Answer:
        release = Release.from_bytes(payload)
        if release.confidence_level != query.confidence_level:
            release = with_confidence_level(release, query.confidence_level)
        return Answer(release, release_id, charged, remaining, repeat)
